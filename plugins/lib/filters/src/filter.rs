//! The parsed form of a filter and how it matches (containerd `filters/filter.go`).

use std::str::FromStr;

use regex::Regex;

use crate::adaptor::Adaptor;
use crate::error::FilterError;

/// A parsed filter: one or more alternatives (the strings of a List request), each a list of
/// selectors that must all hold. Build one with [`crate::parse`] or [`crate::parse_any`].
#[derive(Debug, Clone)]
pub struct Filter {
    /// OR of ANDs. An empty conjunction matches everything.
    alternatives: Vec<Vec<Selector>>,
}

impl Filter {
    /// The filter that matches every object: what an empty filter string, or no filter
    /// strings at all, means.
    pub fn always() -> Filter {
        Filter {
            alternatives: vec![Vec::new()],
        }
    }

    /// Whether this filter matches every object without looking at it, so that a caller may
    /// skip building an adaptor.
    pub fn is_always(&self) -> bool {
        self.alternatives.iter().any(Vec::is_empty)
    }

    /// Whether `obj` satisfies every selector of at least one alternative.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.alternatives
            .iter()
            .any(|selectors| selectors.iter().all(|s| s.matches(obj)))
    }

    pub(crate) fn all_of(selectors: Vec<Selector>) -> Filter {
        Filter {
            alternatives: vec![selectors],
        }
    }

    pub(crate) fn any_of(filters: impl IntoIterator<Item = Filter>) -> Filter {
        Filter {
            alternatives: filters.into_iter().flat_map(|f| f.alternatives).collect(),
        }
    }
}

impl Default for Filter {
    /// [`Filter::always`].
    fn default() -> Self {
        Filter::always()
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    /// Same as [`crate::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::parse(s)
    }
}

/// One `fieldpath [op value]` term.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    pub(crate) fieldpath: Vec<String>,
    pub(crate) operator: Operator,
}

/// What a selector asks of its field.
#[derive(Debug, Clone)]
pub(crate) enum Operator {
    /// No operator: the field is present.
    Present,
    /// `==`: present and equal.
    Equal(Literal),
    /// `!=`: different, an absent field reading as `""`.
    NotEqual(Literal),
    /// `~=`: the pattern matches somewhere in the field, an absent field reading as `""`.
    Matches(Regex),
}

/// A decoded value. Quoted values may hold raw bytes (`"\xff"`) that are not UTF-8; such a value
/// equals no field, since fields are strings, just as Go's byte-wise comparison finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Literal {
    /// The usual case.
    Text(String),
    /// A value that is not valid UTF-8.
    Bytes(Vec<u8>),
}

impl Literal {
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Literal {
        match String::from_utf8(bytes) {
            Ok(text) => Literal::Text(text),
            Err(err) => Literal::Bytes(err.into_bytes()),
        }
    }

    fn equals(&self, field: &str) -> bool {
        match self {
            Literal::Text(text) => text == field,
            Literal::Bytes(_) => false,
        }
    }
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let value = obj.field(&self.fieldpath);
        match &self.operator {
            Operator::Present => value.is_some(),
            Operator::Equal(literal) => value.is_some_and(|v| literal.equals(&v)),
            // containerd compares whatever the adaptor returned, and its adaptors return ""
            // for an absent field: so `name!=x` holds for an object without a name, while
            // `name!=""` does not.
            Operator::NotEqual(literal) => !literal.equals(value.as_deref().unwrap_or_default()),
            Operator::Matches(re) => re.is_match(value.as_deref().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    fn selector(p: &str, operator: Operator) -> Selector {
        Selector {
            fieldpath: path(p),
            operator,
        }
    }

    fn text(s: &str) -> Literal {
        Literal::Text(s.to_owned())
    }

    /// An object with `name` = "foo" and nothing else.
    fn named_foo(p: &[String]) -> Option<String> {
        (p == ["name"]).then(|| "foo".to_owned())
    }

    fn check(operator: Operator, field: &str) -> bool {
        Filter::all_of(vec![selector(field, operator)]).matches(&named_foo)
    }

    #[test]
    fn present() {
        assert!(check(Operator::Present, "name"));
        assert!(!check(Operator::Present, "other"));
    }

    #[test]
    fn equal_needs_presence() {
        assert!(check(Operator::Equal(text("foo")), "name"));
        assert!(!check(Operator::Equal(text("bar")), "name"));
        assert!(!check(Operator::Equal(text("")), "other"));
    }

    #[test]
    fn not_equal_reads_absent_as_empty() {
        assert!(!check(Operator::NotEqual(text("foo")), "name"));
        assert!(check(Operator::NotEqual(text("bar")), "name"));
        assert!(check(Operator::NotEqual(text("bar")), "other"));
        assert!(!check(Operator::NotEqual(text("")), "other"));
        assert!(check(Operator::NotEqual(text("")), "name"));
    }

    #[test]
    fn matches_is_unanchored_and_reads_absent_as_empty() {
        let re = |p: &str| Operator::Matches(Regex::new(p).expect("test regex"));
        assert!(check(re("o"), "name"));
        assert!(check(re("^fo+$"), "name"));
        assert!(!check(re("^o"), "name"));
        assert!(check(re("^$"), "other"));
        assert!(check(re(".*"), "other"));
        assert!(!check(re("."), "other"));
    }

    #[test]
    fn non_utf8_literal_equals_nothing_and_differs_from_everything() {
        let bytes = Literal::from_bytes(vec![0xff]);
        assert_eq!(bytes, Literal::Bytes(vec![0xff]));
        assert!(!check(Operator::Equal(bytes.clone()), "name"));
        assert!(check(Operator::NotEqual(bytes.clone()), "name"));
        assert!(check(Operator::NotEqual(bytes), "other"));
        assert_eq!(Literal::from_bytes(b"ok".to_vec()), text("ok"));
    }

    #[test]
    fn conjunction_and_alternatives() {
        let foo = Filter::all_of(vec![
            selector("name", Operator::Present),
            selector("name", Operator::Equal(text("foo"))),
        ]);
        let bar = Filter::all_of(vec![selector("name", Operator::Equal(text("bar")))]);
        let missing = Filter::all_of(vec![
            selector("name", Operator::Present),
            selector("other", Operator::Present),
        ]);
        assert!(foo.matches(&named_foo));
        assert!(!bar.matches(&named_foo));
        assert!(!missing.matches(&named_foo));
        assert!(Filter::any_of([bar.clone(), foo.clone()]).matches(&named_foo));
        assert!(!Filter::any_of([bar.clone(), missing.clone()]).matches(&named_foo));
        assert!(!Filter::any_of([bar, missing]).is_always());
        assert!(!foo.is_always());
    }

    #[test]
    fn always_matches_anything() {
        let nothing = |_: &[String]| -> Option<String> { None };
        assert!(Filter::always().matches(&nothing));
        assert!(Filter::always().is_always());
        assert!(Filter::default().is_always());
        let bar = Filter::all_of(vec![selector("name", Operator::Equal(text("bar")))]);
        let either = Filter::any_of([bar, Filter::always()]);
        assert!(either.is_always());
        assert!(either.matches(&nothing));
    }

    #[test]
    fn from_str_parses() {
        let filter: Filter = "name==foo".parse().expect("valid filter");
        assert!(filter.matches(&named_foo));
        assert!("name==".parse::<Filter>().is_err());
    }
}
