//! How a filter reads an object (containerd `filters/adaptor.go`), and helpers for the lookups
//! every List call shares, such as `labels.<key>` (containerd's `checkMap` in
//! `metadata/adaptors.go`).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// What a filter reads from an object.
///
/// Each service adapts its objects: the field path of a selector (`["labels", "a.b"]` for
/// `labels."a.b"`, `["labels", "a", "b"]` for `labels.a.b`) goes in, the field's value comes out.
/// Any closure `Fn(&[String]) -> Option<String>` is an adaptor.
pub trait Adaptor {
    /// The value at `path`, or `None` when the object has no such field.
    ///
    /// containerd's adaptors call a field absent when it is empty (an image without labels has
    /// no `labels.x`; a container without an image has no `image`); returning `None` for empty
    /// strings keeps presence tests (`filters=image`) behaving as they do there.
    fn field(&self, path: &[String]) -> Option<String>;
}

impl<F> Adaptor for F
where
    F: Fn(&[String]) -> Option<String>,
{
    fn field(&self, path: &[String]) -> Option<String> {
        self(path)
    }
}

/// A string-to-string map that label-style lookups can read: `HashMap` and `BTreeMap` of
/// `String` to `String`.
pub trait FieldMap {
    /// The value stored under `key`.
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl<S: BuildHasher> FieldMap for HashMap<String, String, S> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl FieldMap for BTreeMap<String, String> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Looks up the map entry named by `key_path`, its segments re-joined with `.`: both
/// `annotations.a.b` and `annotations."a.b"` name the key `a.b`. Pass the path without its
/// leading segment, e.g. `map_field(&desc.annotations, &path[1..])`.
pub fn map_field<M: FieldMap + ?Sized>(map: &M, key_path: &[String]) -> Option<String> {
    map.lookup(&key_path.join(".")).map(str::to_owned)
}

/// The common `labels.<key>` lookup: when `path` starts with `labels`, the rest of the path,
/// re-joined with `.`, is the label key (`labels.a.b` reads label `a.b`, as does
/// `labels."a.b"`). Any other path is `None`, so an adaptor can try this first or call it from
/// its `"labels"` arm.
pub fn label_field<M: FieldMap + ?Sized>(labels: &M, path: &[String]) -> Option<String> {
    match path.split_first() {
        Some((head, key_path)) if head == "labels" => map_field(labels, key_path),
        _ => None,
    }
}

/// An adaptor over a flat map from dotted field path to value, handy in tests and for
/// objects that are naturally a few strings: `name` → `"foo"`, `labels.a.b` → `"c"`.
/// The selector's path is re-joined with `.` before the lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapAdaptor {
    fields: HashMap<String, String>,
}

impl MapAdaptor {
    /// An object with no fields.
    pub fn new() -> Self {
        MapAdaptor::default()
    }

    /// Adds (or replaces) the field at dotted `path`, builder style.
    pub fn with(mut self, path: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(path, value);
        self
    }

    /// Adds (or replaces) the field at dotted `path`.
    pub fn insert(&mut self, path: impl Into<String>, value: impl Into<String>) {
        self.fields.insert(path.into(), value.into());
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapAdaptor {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        MapAdaptor {
            fields: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl Adaptor for MapAdaptor {
    fn field(&self, path: &[String]) -> Option<String> {
        map_field(&self.fields, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> Vec<String> {
        segments.iter().map(|s| (*s).to_owned()).collect()
    }

    fn labels() -> HashMap<String, String> {
        [
            ("a.b", "c"),
            ("containerd.io/gc.root", "now"),
            ("plain", "p"),
            ("", "empty key"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn label_segments_are_rejoined() {
        let labels = labels();
        assert_eq!(
            label_field(&labels, &path(&["labels", "a", "b"])).as_deref(),
            Some("c")
        );
        assert_eq!(
            label_field(&labels, &path(&["labels", "a.b"])).as_deref(),
            Some("c")
        );
        assert_eq!(
            label_field(&labels, &path(&["labels", "containerd.io/gc.root"])).as_deref(),
            Some("now")
        );
        assert_eq!(
            label_field(&labels, &path(&["labels", "plain"])).as_deref(),
            Some("p")
        );
        assert_eq!(label_field(&labels, &path(&["labels", "a"])), None);
        assert_eq!(label_field(&labels, &path(&["labels", "missing"])), None);
    }

    #[test]
    fn label_field_wants_the_labels_prefix() {
        let labels = labels();
        assert_eq!(label_field(&labels, &path(&["plain"])), None);
        assert_eq!(label_field(&labels, &path(&["annotations", "plain"])), None);
        assert_eq!(label_field(&labels, &[]), None);
        // A bare `labels` names the empty key, as containerd's strings.Join of nothing does.
        assert_eq!(
            label_field(&labels, &path(&["labels"])).as_deref(),
            Some("empty key")
        );
    }

    #[test]
    fn map_field_works_on_btree_maps() {
        let annotations: BTreeMap<String, String> =
            [("x.y".to_owned(), "z".to_owned())].into_iter().collect();
        assert_eq!(
            map_field(&annotations, &path(&["x", "y"])).as_deref(),
            Some("z")
        );
        assert_eq!(map_field(&annotations, &path(&["x"])), None);
    }

    #[test]
    fn map_adaptor() {
        let obj = MapAdaptor::new()
            .with("name", "foo")
            .with("labels.a.b", "c");
        assert_eq!(obj.field(&path(&["name"])).as_deref(), Some("foo"));
        assert_eq!(
            obj.field(&path(&["labels", "a", "b"])).as_deref(),
            Some("c")
        );
        assert_eq!(obj.field(&path(&["labels", "a.b"])).as_deref(), Some("c"));
        assert_eq!(obj.field(&path(&["other"])), None);

        let collected: MapAdaptor = [("name", "foo"), ("labels.a.b", "c")].into_iter().collect();
        assert_eq!(collected, obj);

        let mut inserted = MapAdaptor::new();
        inserted.insert("name", "foo");
        inserted.insert("name", "bar");
        assert_eq!(inserted.field(&path(&["name"])).as_deref(), Some("bar"));
    }

    #[test]
    fn closures_are_adaptors() {
        let labels = labels();
        let adaptor = |p: &[String]| -> Option<String> {
            match p.first().map(String::as_str) {
                Some("id") => Some("c1".to_owned()),
                Some("labels") => label_field(&labels, p),
                _ => None,
            }
        };
        let dynamic: &dyn Adaptor = &adaptor;
        assert_eq!(dynamic.field(&path(&["id"])).as_deref(), Some("c1"));
        assert_eq!(
            dynamic.field(&path(&["labels", "a", "b"])).as_deref(),
            Some("c")
        );
        assert_eq!(dynamic.field(&path(&["image"])), None);
    }
}
