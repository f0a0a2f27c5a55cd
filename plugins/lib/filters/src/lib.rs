//! containerd's filter language, the one parser behind every List RPC's `filters` field
//! (containerd `filters/`).
//!
//! A filter string is a comma-separated list of selectors, all of which must hold:
//!
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath [operator value]
//! fieldpath := field ("." field)*
//! field     := [A-Za-z0-9_]+ | "quoted"
//! operator  := "==" | "!=" | "~="
//! value     := "quoted" | [^\s,]+        (and /re/ or |re| after ~=)
//! ```
//!
//! A selector without an operator tests that the field is present. `==` wants it present and
//! equal, `!=` wants it different (an absent field reads as `""`), `~=` is an unanchored regular
//! expression match (an absent field reads as `""`). OR is expressed by sending several strings,
//! which [`parse_any`] combines; `|` is never OR.
//!
//! ```
//! use berth_filters::{parse, MapAdaptor};
//!
//! let filter = parse(r#"name~=^docker\.io/,labels."containerd.io/gc.root""#)?;
//! let image = MapAdaptor::new()
//!     .with("name", "docker.io/library/busybox:latest")
//!     .with("labels.containerd.io/gc.root", "2024-01-01");
//! assert!(filter.matches(&image));
//! # Ok::<(), berth_filters::FilterError>(())
//! ```

mod adaptor;
mod error;
mod filter;
mod parser;
mod quote;
mod scanner;

pub use adaptor::{label_field, map_field, Adaptor, FieldMap, MapAdaptor};
pub use error::FilterError;
pub use filter::Filter;
pub use parser::{parse, parse_any};
