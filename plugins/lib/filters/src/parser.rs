//! The recursive-descent parser (containerd `filters/parser.go`).
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | "quoted"
//! operator  := "==" | "!=" | "~="
//! value     := "quoted" | /quoted/ | |quoted| | [^\s,]+    (`/` and `|` only after `~=`)
//! ```

use regex::Regex;

use crate::error::FilterError;
use crate::filter::{Filter, Literal, Operator, Selector};
use crate::quote::{unquote, QuoteSyntaxError};
use crate::scanner::{Scanner, Token, TokenKind};

/// Parses one filter string: comma-separated selectors that must all match.
///
/// The empty string matches everything. Anything else must follow the grammar, so a string of
/// spaces is an error, as in containerd.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.is_empty() {
        return Ok(Filter::always());
    }
    Parser::new(input).selectors().map(Filter::all_of)
}

/// Parses the repeated `filters` field of a List request: the object must match at least one
/// of the strings (containerd `ParseAll`).
///
/// No strings at all matches everything, and so does a list holding an empty string, since
/// that string alone matches everything. The first string that fails to parse fails the whole.
pub fn parse_any<S: AsRef<str>>(inputs: &[S]) -> Result<Filter, FilterError> {
    if inputs.is_empty() {
        return Ok(Filter::always());
    }
    let filters = inputs
        .iter()
        .map(|input| parse(input.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter::any_of(filters))
}

struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            scanner: Scanner::new(input),
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut selectors = vec![self.selector()?];
        loop {
            // A raw peek: whitespace before a comma or at the end is unexpected, as in
            // containerd (`name==a ,b` and `name==a ` are errors).
            match self.scanner.peek() {
                None => return Ok(selectors),
                Some(',') => {
                    self.scanner.scan();
                    selectors.push(self.selector()?);
                }
                Some(other) => {
                    // Go prints a NUL, which its scanner turns into an error token, as U+FFFD.
                    let shown = if other == '\0' {
                        char::REPLACEMENT_CHARACTER
                    } else {
                        other
                    };
                    return Err(
                        self.syntax(self.scanner.cursor(), format!("unexpected input: {shown}"))
                    );
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let fieldpath = self.fieldpath()?;
        if matches!(self.scanner.peek(), None | Some(',')) {
            return Ok(Selector {
                fieldpath,
                operator: Operator::Present,
            });
        }
        let operator = match self.operator()? {
            Op::Equal => Operator::Equal(self.literal()?),
            Op::NotEqual => Operator::NotEqual(self.literal()?),
            Op::Matches => Operator::Matches(self.pattern()?),
        };
        Ok(Selector {
            fieldpath,
            operator,
        })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, FilterError> {
        let mut fieldpath = vec![self.field()?];
        while self.scanner.peek() == Some('.') {
            self.scanner.scan();
            fieldpath.push(self.field()?);
        }
        Ok(fieldpath)
    }

    fn field(&mut self) -> Result<String, FilterError> {
        let token = self.scanner.scan();
        match token.kind {
            TokenKind::Field => Ok(token.text.to_owned()),
            TokenKind::Quoted => {
                let bytes = self.unquote(token, false)?;
                // Adaptors take string paths; a path segment with raw non-UTF-8 bytes could
                // name no stored key in containerd either.
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            TokenKind::Illegal(reason) => Err(self.syntax(token.pos, reason)),
            _ => Err(self.syntax(token.pos, "expected field or quoted")),
        }
    }

    fn operator(&mut self) -> Result<Op, FilterError> {
        let token = self.scanner.scan();
        match token.kind {
            TokenKind::Operator => match token.text {
                "==" => Ok(Op::Equal),
                "!=" => Ok(Op::NotEqual),
                "~=" => Ok(Op::Matches),
                other => Err(self.syntax(token.pos, format!("unsupported operator {other:?}"))),
            },
            TokenKind::Illegal(reason) => Err(self.syntax(token.pos, reason)),
            _ => Err(self.syntax(token.pos, r#"expected an operator ("=="|"!="|"~=")"#)),
        }
    }

    /// The value of `==` or `!=`: unquoted, or in double quotes.
    fn literal(&mut self) -> Result<Literal, FilterError> {
        let (_, bytes) = self.value(false)?;
        Ok(Literal::from_bytes(bytes))
    }

    /// The value of `~=`, which may also be quoted with `/` or `|`, compiled.
    fn pattern(&mut self) -> Result<Regex, FilterError> {
        let (pos, bytes) = self.value(true)?;
        let invalid = |pattern: String, reason: String| FilterError::InvalidRegex {
            input: self.input.to_owned(),
            position: pos,
            pattern,
            reason,
        };
        let pattern = String::from_utf8(bytes).map_err(|err| {
            let lossy = String::from_utf8_lossy(err.as_bytes()).into_owned();
            invalid(lossy, "invalid UTF-8".to_owned())
        })?;
        Regex::new(&pattern).map_err(|err| {
            let reason = regex_reason(&err);
            invalid(pattern, reason)
        })
    }

    /// Reads a value token, returning where it started and its decoded bytes.
    fn value(&mut self, allow_alt_quotes: bool) -> Result<(usize, Vec<u8>), FilterError> {
        let token = self.scanner.scan();
        match token.kind {
            TokenKind::Value | TokenKind::Field => Ok((token.pos, token.text.as_bytes().to_vec())),
            TokenKind::Quoted => Ok((token.pos, self.unquote(token, allow_alt_quotes)?)),
            TokenKind::Illegal(reason) => Err(self.syntax(token.pos, reason)),
            _ => Err(self.syntax(token.pos, "expected value or quoted")),
        }
    }

    /// Decodes a quoted token. `/` and `|` quotes are refused unless `allow_alt_quotes`.
    fn unquote(&self, token: Token<'_>, allow_alt_quotes: bool) -> Result<Vec<u8>, FilterError> {
        if !allow_alt_quotes && !token.text.starts_with('"') {
            return Err(self.syntax(token.pos, "invalid quote encountered"));
        }
        unquote(token.text).map_err(|QuoteSyntaxError| {
            self.syntax(
                token.pos,
                format!("unquoting failed: {}", QuoteSyntaxError::MESSAGE),
            )
        })
    }

    fn syntax(&self, position: usize, reason: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            input: self.input.to_owned(),
            position,
            reason: reason.into(),
        }
    }
}

/// The parsed operator, before its value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    Matches,
}

/// The regex crate's message on one line: its syntax errors span several lines (the pattern,
/// a caret, then `error: <what>`), which would break a one-line status message.
fn regex_reason(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .map_or_else(
                || text.split_whitespace().collect::<Vec<_>>().join(" "),
                str::to_owned,
            ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::adaptor::{label_field, Adaptor, MapAdaptor};

    /// The corpus of containerd's `filters/filter_test.go`: a name, an optional `other`, labels.
    /// Empty strings are absent fields, as in containerd's test adaptor.
    struct Entry {
        name: &'static str,
        other: &'static str,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Entry {
        fn field(&self, path: &[String]) -> Option<String> {
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            match path.first().map(String::as_str) {
                Some("name") => non_empty(self.name),
                Some("other") => non_empty(self.other),
                Some("labels") => label_field(&self.labels, path),
                _ => None,
            }
        }
    }

    fn entry(name: &'static str, other: &'static str, labels: &[(&str, &str)]) -> Entry {
        Entry {
            name,
            other,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn corpus() -> Vec<Entry> {
        vec![
            entry("foo", "", &[("foo", "true")]),
            entry("bar", "", &[]),
            entry(
                "foo",
                "",
                &[("foo", "present"), ("more complex label", "present")],
            ),
            entry("bar", "", &[("bar", "true")]),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ""#, "present")],
            ),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ".post"#, "present")],
            ),
            entry("baz", "too complex, yo", &[]),
            entry("bazo", "abc", &[]),
            entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
        ]
    }

    /// Indexes of the corpus entries that `input` selects.
    fn selected(input: &str) -> Vec<usize> {
        let filter = parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(*e))
            .map(|(i, _)| i)
            .collect()
    }

    fn error(input: &str) -> String {
        match parse(input) {
            Ok(filter) => panic!("{input:?} should not parse, got {filter:?}"),
            Err(err) => err.to_string(),
        }
    }

    const ALL: [usize; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

    // The cases of containerd's TestFilters, in its order.

    #[test]
    fn empty_matches_all() {
        assert_eq!(selected(""), ALL);
    }

    #[test]
    fn present() {
        assert_eq!(selected("name"), ALL);
        assert_eq!(selected("labels.foo"), [0, 2, 8]);
        assert_eq!(selected("labels.foo,name"), [0, 2, 8]);
        assert_eq!(selected("other"), [6, 7]);
        assert_eq!(selected("nosuchfield"), [] as [usize; 0]);
    }

    #[test]
    fn label_values() {
        assert_eq!(selected("labels.foo==true"), [0]);
        assert_eq!(selected("labels.foo==omg_asdf.asdf-qwer"), [8]);
    }

    #[test]
    fn alt_quotes_are_refused_in_field_paths() {
        assert_eq!(
            error("labels.|foo|==omg_asdf.asdf-qwer"),
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered"
        );
    }

    #[test]
    fn names() {
        assert_eq!(selected("name==bar"), [1, 3]);
        assert_eq!(selected("name!=bar"), [0, 2, 4, 5, 6, 7, 8]);
        assert_eq!(selected("name==bar,labels.bar"), [3]);
    }

    #[test]
    fn quoted_value_with_comma_and_space() {
        assert_eq!(selected(r#"other=="too complex, yo""#), [6]);
    }

    #[test]
    fn regexps() {
        assert_eq!(selected("other~=[abc]+,name!=foo"), [6, 7]);
        assert_eq!(selected("other~=/[abc]+/,name!=foo"), [6, 7]);
        assert_eq!(selected("other~=/[abc]{1,2}/,name!=foo"), [6, 7]);
        // Valid, matches nothing.
        assert_eq!(
            selected(r#"other~=/[abc]{0,1}"\//,name!=foo"#),
            [] as [usize; 0]
        );
    }

    #[test]
    fn conjunctions() {
        assert_eq!(selected("name==bar,labels.bar==true"), [3]);
        assert_eq!(selected("name==bar,labels.bar==wrong"), [] as [usize; 0]);
    }

    #[test]
    fn quoted_field_paths() {
        assert_eq!(selected(r#"name==foo,labels."more complex label""#), [2]);
        assert_eq!(
            selected(r#"labels."more complex label with \\ and \""==present"#),
            [4]
        );
        assert_eq!(
            selected(r#"labels."more complex label with \\ and \"".post==present"#),
            [5]
        );
    }

    #[test]
    fn containerd_error_messages() {
        assert_eq!(
            error(r#"labels.?"more complex label with \\ and \"".post==present"#),
            r#"filters: parse error: [labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted"#
        );
        assert_eq!(
            error("name==foo,"),
            "filters: parse error: [name==foo,]: expected field or quoted"
        );
        assert_eq!(
            error("labels."),
            "filters: parse error: [labels.]: expected field or quoted"
        );
        assert_eq!(
            error("image~=,id?=?fbaq"),
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted"
        );
        assert_eq!(
            error("labels.ns/key==value"),
            "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated"
        );
        assert_eq!(
            error("labels.key==/value"),
            "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated"
        );
    }

    // Berth's own cases.

    fn obj() -> MapAdaptor {
        MapAdaptor::new()
            .with("name", "docker.io/library/foo:bar")
            .with("labels.containerd.io/gc.root", "2024")
            .with("labels.a.b", "c")
            .with("labels.x", "")
    }

    fn matches(input: &str) -> bool {
        parse(input)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
            .matches(&obj())
    }

    #[test]
    fn quoted_label_key_with_dots_and_slash() {
        assert!(matches(r#"labels."containerd.io/gc.root""#));
        assert!(matches(r#"labels."containerd.io/gc.root"==2024"#));
        assert!(!matches(r#"labels."containerd.io/gc.root"==2025"#));
        assert!(!matches(r#"labels."containerd.io/gc.roots""#));
    }

    #[test]
    fn dotted_label_keys() {
        assert!(matches("labels.a.b==c"));
        assert!(matches(r#"labels."a.b"==c"#));
        assert!(matches(r#"labels."a".b==c"#));
        assert!(matches("labels.a.b"));
        assert!(!matches("labels.a"));
        assert!(!matches("labels.a.b!=c"));
    }

    #[test]
    fn present_with_empty_value() {
        assert!(matches("labels.x"));
        assert!(matches("labels.x==\"\""));
        assert!(!matches("labels.x!=\"\""));
    }

    #[test]
    fn not_equal_on_absent_fields() {
        assert!(matches("labels.missing!=c"));
        assert!(matches("id!=foo"));
        // An absent field reads as "", so it is not different from "".
        assert!(!matches("id!=\"\""));
    }

    #[test]
    fn alternative_regex_quotes() {
        assert!(!matches("name~=|^foo|"));
        assert!(matches("name~=|^docker|"));
        assert!(matches("name~=/bar$/"));
        assert!(matches("name~=/library\\/foo/"));
        assert!(matches("name~=|library/foo|"));
        assert!(!matches("name~=/^bar/"));
        assert!(matches(r#"name~="foo""#));
    }

    #[test]
    fn regex_is_unanchored_and_absent_reads_as_empty() {
        assert!(matches("name~=library"));
        assert!(!matches("name~=^library"));
        assert!(matches("id~=^$"));
        assert!(matches("id~=/.*/"));
        assert!(!matches("id~=/./"));
    }

    #[test]
    fn regex_starting_with_a_dot_must_be_quoted() {
        // containerd's scanner reads `.` (and `,`) as a separator before it considers a value,
        // so an unquoted value cannot start with a dot.
        assert_eq!(
            error("name~=.*foo"),
            "filters: parse error: [name~= >|.|< *foo]: expected value or quoted"
        );
        assert!(matches("name~=/.*foo/"));
        assert!(matches("name~=o.*bar"));
    }

    #[test]
    fn pipe_is_not_or() {
        // Unquoted, `|` is part of an `==` value ...
        assert!(!matches("name==foo|docker.io/library/foo:bar"));
        let pipe = MapAdaptor::new().with("name", "a|b");
        assert!(parse("name==a|b").expect("valid").matches(&pipe));
        // ... and regex alternation in a `~=` value.
        assert!(matches("name~=nomatch|foo:bar"));
        // As a quote it is refused outside `~=`.
        assert_eq!(
            error("name==|foo|"),
            "filters: parse error: [name== >|||< foo|]: invalid quote encountered"
        );
        assert_eq!(
            error("name!=/foo/"),
            "filters: parse error: [name!= >|/|< foo/]: invalid quote encountered"
        );
    }

    #[test]
    fn spaces() {
        assert!(matches("name == docker.io/library/foo:bar"));
        assert!(matches("name ~= foo,labels.a.b == c"));
        assert!(matches("name~=foo, labels.a.b==c"));
        assert!(matches(" name"));
        // Whitespace is skipped only before a token; containerd's loop peeks at raw input.
        assert_eq!(
            error("name~=foo ,labels.a.b==c"),
            "filters: parse error: [name~=foo >| |< ,labels.a.b==c]: unexpected input:  "
        );
        assert_eq!(
            error("name==foo "),
            "filters: parse error: [name==foo >| |< ]: unexpected input:  "
        );
        assert_eq!(
            error("name ,id"),
            r#"filters: parse error: [name  >|,|< id]: expected an operator ("=="|"!="|"~=")"#
        );
        assert_eq!(
            error(" "),
            "filters: parse error: [ ]: expected field or quoted"
        );
    }

    #[test]
    fn value_with_punctuation_and_unicode() {
        let o = MapAdaptor::new().with("name", "牛=a.b-c/d!e");
        assert!(parse("name==牛=a.b-c/d!e").expect("valid").matches(&o));
        assert!(parse("name~=牛").expect("valid").matches(&o));
        assert!(parse("name~=|牛|").expect("valid").matches(&o));
    }

    #[test]
    fn escapes_in_values() {
        let o = MapAdaptor::new().with("name", "a\tb\"c");
        assert!(parse(r#"name=="a\tb\"c""#).expect("valid").matches(&o));
        assert!(parse(r#"name=="a\x09b\u0022c""#)
            .expect("valid")
            .matches(&o));
        assert!(parse(r"name~=/a\tb/").expect("valid").matches(&o));
        // Unquoted values are taken raw: the backslash stays for the regex engine.
        assert!(parse(r"name~=a\tb").expect("valid").matches(&o));
        assert!(!parse(r"name==a\tb").expect("valid").matches(&o));
        // A value that decodes to non-UTF-8 bytes equals nothing.
        assert!(!parse(r#"name=="\xff""#).expect("valid").matches(&o));
        assert!(parse(r#"name!="\xff""#).expect("valid").matches(&o));
    }

    #[test]
    fn unexpected_input_after_a_selector() {
        assert_eq!(
            error("name==a b"),
            "filters: parse error: [name==a >| |< b]: unexpected input:  "
        );
        assert_eq!(
            error(r#"name=="a"b"#),
            r#"filters: parse error: [name=="a" >|b|< ]: unexpected input: b"#
        );
        assert_eq!(
            error(r#"labels."a"b"#),
            r#"filters: parse error: [labels."a" >|b|< ]: expected an operator ("=="|"!="|"~=")"#
        );
    }

    #[test]
    fn operators() {
        assert_eq!(
            error("name=foo"),
            r#"filters: parse error: [name >|=|< foo]: unsupported operator "=""#
        );
        assert_eq!(
            error("name===foo"),
            r#"filters: parse error: [name >|=|< ==foo]: unsupported operator "===""#
        );
        assert_eq!(
            error("name=~foo"),
            r#"filters: parse error: [name >|=|< ~foo]: unsupported operator "=~""#
        );
        assert_eq!(
            error("name?"),
            r#"filters: parse error: [name >|?|< ]: expected an operator ("=="|"!="|"~=")"#
        );
        assert_eq!(
            error("name.?"),
            "filters: parse error: [name. >|?|< ]: expected field or quoted"
        );
    }

    #[test]
    fn missing_values() {
        assert_eq!(
            error("name=="),
            "filters: parse error: [name==]: expected value or quoted"
        );
        assert_eq!(
            error("name== "),
            "filters: parse error: [name== ]: expected value or quoted"
        );
        assert_eq!(
            error("name==.x"),
            "filters: parse error: [name== >|.|< x]: expected value or quoted"
        );
    }

    #[test]
    fn leading_and_doubled_commas() {
        assert_eq!(
            error(",name"),
            "filters: parse error: [ >|,|< name]: expected field or quoted"
        );
        assert_eq!(
            error("name,,id"),
            "filters: parse error: [name, >|,|< id]: expected field or quoted"
        );
        assert_eq!(
            error("==x"),
            "filters: parse error: [ >|=|< =x]: expected field or quoted"
        );
    }

    #[test]
    fn quoting_errors() {
        assert_eq!(
            error(r#"labels."\g""#),
            r#"filters: parse error: [labels. >|"|< \g"]: illegal escape sequence"#
        );
        assert_eq!(
            error(r#"labels."\xaz""#),
            r#"filters: parse error: [labels. >|"|< \xaz"]: illegal numeric escape sequence"#
        );
        assert_eq!(
            error(r#"labels."\400""#),
            r#"filters: parse error: [labels. >|"|< \400"]: unquoting failed: quote syntax error"#
        );
        assert_eq!(
            error("labels.\"a\nb\"==c"),
            "filters: parse error: [labels. >|\"|< a\nb\"==c]: quoted literal not terminated"
        );
        assert_eq!(
            error(r"name~=/\d+/"),
            r"filters: parse error: [name~= >|/|< \d+/]: illegal escape sequence"
        );
        assert_eq!(
            error("name\0"),
            "filters: parse error: [name >|\0|< ]: unexpected null"
        );
        assert_eq!(
            error("name==a\0"),
            "filters: parse error: [name==a >|\0|< ]: unexpected input: \u{fffd}"
        );
    }

    #[test]
    fn invalid_regex_is_a_parse_error() {
        let err = parse("name~=[a").expect_err("bad regex");
        assert!(matches!(err, FilterError::InvalidRegex { position: 6, .. }));
        assert_eq!(
            err.to_string(),
            r#"filters: parse error: [name~= >|[|< a]: invalid regular expression "[a": unclosed character class"#
        );
        let err = parse(r#"id==x,name~=/(/"#).expect_err("bad regex");
        assert_eq!(err.position(), 12);
        assert!(!err.to_string().contains('\n'));
        let err = parse(r#"name~="\xff""#).expect_err("not UTF-8");
        assert!(err.to_string().ends_with(": invalid UTF-8"), "{err}");
    }

    #[test]
    fn errors_carry_input_and_position() {
        let err = parse("name==foo,").expect_err("trailing comma");
        assert_eq!(err.input(), "name==foo,");
        assert_eq!(err.position(), 10);
        assert_eq!(
            err,
            FilterError::Syntax {
                input: "name==foo,".to_owned(),
                position: 10,
                reason: "expected field or quoted".to_owned(),
            }
        );
        let err = parse("labels.|x|").expect_err("alt quote");
        assert_eq!(err.position(), 7);
    }

    #[test]
    fn field_names_may_start_with_digits_or_underscore() {
        let o = MapAdaptor::new().with("1_a", "x").with("_b", "y");
        assert!(parse("1_a==x,_b==y").expect("valid").matches(&o));
    }

    #[test]
    fn parse_any_is_or() {
        let filter = parse_any(&["name==nomatch", "labels.a.b==c"]).expect("valid");
        assert!(filter.matches(&obj()));
        assert!(!filter.is_always());
        let filter = parse_any(&["name==nomatch", "labels.a.b==d"]).expect("valid");
        assert!(!filter.matches(&obj()));
        // Each string is still an AND.
        let filter = parse_any(&["name==nomatch,labels.a.b==c", "id"]).expect("valid");
        assert!(!filter.matches(&obj()));
    }

    #[test]
    fn parse_any_empty_matches_everything() {
        let none: [&str; 0] = [];
        assert!(parse_any(&none).expect("valid").is_always());
        let filter = parse_any(&["name==nomatch", ""]).expect("valid");
        assert!(filter.is_always());
        assert!(filter.matches(&MapAdaptor::new()));
        let owned = vec![String::new()];
        assert!(parse_any(&owned).expect("valid").is_always());
        // Only the exact empty string: a blank one is a parse error, as in containerd.
        assert!(parse_any(&[" "]).is_err());
    }

    #[test]
    fn parse_any_fails_on_any_bad_string() {
        let err = parse_any(&["name==a", "", "name=="]).expect_err("third is bad");
        assert_eq!(err.input(), "name==");
        assert_eq!(
            err.to_string(),
            "filters: parse error: [name==]: expected value or quoted"
        );
    }

    #[test]
    fn regex_reason_is_one_line() {
        // Go's RE2 would read `a{` as a literal brace; the regex crate refuses it.
        let err = parse("name~=a{").expect_err("bad regex");
        let FilterError::InvalidRegex { reason, .. } = &err else {
            panic!("expected a regex error, got {err:?}");
        };
        assert_eq!(reason, "unclosed counted repetition");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
