//! Listing output: tabwriter-aligned tables with ctr's column names, `--format json` (an array of
//! objects with the same fields) and `-q` (names only); plus ctr's size and age formats.

use std::collections::HashMap;
use std::io::{self, Write};

use clap::{Args, ValueEnum};
use serde_json::Value;

/// How a listing is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned columns, as ctr prints them.
    #[default]
    Table,
    /// A JSON array of objects, for scripts.
    Json,
}

/// Flags every listing takes.
#[derive(Debug, Clone, Args)]
pub struct ListOpts {
    /// Print only names (ids, refs, digests), one a line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Renders rows as ctr's `tabwriter.NewWriter(w, 1, 8, 1, ' ', 0)` does: each column padded to
/// its widest cell plus one space (trailing blanks trimmed).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|s| (*s).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text, one line per row.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] + 1 - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A listing: per item a table row, a JSON object and a name, printed per [`ListOpts`].
#[derive(Debug)]
pub struct Listing {
    table: Table,
    json: Vec<Value>,
    names: Vec<String>,
}

impl Listing {
    /// An empty listing with ctr's column names.
    pub fn new(header: &[&str]) -> Self {
        Self {
            table: Table::new(header),
            json: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Adds an item.
    pub fn push(&mut self, name: impl Into<String>, cells: Vec<String>, json: Value) {
        self.names.push(name.into());
        self.table.row(cells);
        self.json.push(json);
    }

    /// The text to print: names with `-q`, JSON with `--format json`, else the table.
    pub fn render(&self, opts: &ListOpts) -> String {
        if opts.quiet {
            return self.names.iter().map(|n| format!("{n}\n")).collect();
        }
        match opts.format {
            Format::Table => self.table.render(),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&Value::Array(self.json.clone()))
                    .unwrap_or_else(|_| "[]".to_owned());
                s.push('\n');
                s
            }
        }
    }

    /// Prints to stdout.
    pub fn print(&self, opts: &ListOpts) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(self.render(opts).as_bytes())?;
        out.flush()
    }
}

/// `k=v` pairs sorted and joined with `,`, or `-` when there are none (ctr's label column).
pub fn labels_column(labels: &HashMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    sorted_labels(labels).join(",")
}

/// `k=v` pairs sorted by key.
pub fn sorted_labels(labels: &HashMap<String, String>) -> Vec<String> {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs
}

/// Labels as a JSON object with sorted keys.
pub fn labels_json(labels: &HashMap<String, String>) -> Value {
    let sorted: std::collections::BTreeMap<_, _> = labels.iter().collect();
    serde_json::to_value(sorted).unwrap_or(Value::Null)
}

/// Binary sizes as containerd's `progress.Bytes` prints them: `766.1 KiB`.
pub fn bytes_binary(size: i64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Decimal sizes as go-units `HumanSize` prints them: `1.234MB`, `58B`.
pub fn bytes_decimal(size: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    // %.4g: four significant digits, no trailing zeros.
    let digits = if value >= 1000.0 {
        0
    } else if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    let mut text = format!("{value:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", UNITS[unit])
}

/// An age as go-units `HumanDuration` prints it: `3 seconds`, `About a minute`, `2 hours`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    match () {
        _ if secs < 1 => "Less than a second".to_owned(),
        _ if secs == 1 => "1 second".to_owned(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{days} days"),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", days / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", days / 30),
        _ => format!("{} years", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let mut t = Table::new(&["NAME", "LABELS"]);
        t.row(vec!["default".into(), "-".into()]);
        t.row(vec!["a".into(), "k=v".into()]);
        assert_eq!(t.render(), "NAME    LABELS\ndefault -\na       k=v\n");
    }

    #[test]
    fn table_counts_chars_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        assert_eq!(t.render(), "A B\né x\n");
    }

    fn listing() -> Listing {
        let mut l = Listing::new(&["ID", "SIZE"]);
        l.push(
            "one",
            vec!["one".into(), "1".into()],
            serde_json::json!({"id": "one", "size": 1}),
        );
        l.push(
            "two",
            vec!["two".into(), "22".into()],
            serde_json::json!({"id": "two", "size": 22}),
        );
        l
    }

    #[test]
    fn listing_formats() {
        let l = listing();
        let table = ListOpts {
            quiet: false,
            format: Format::Table,
        };
        assert_eq!(l.render(&table), "ID  SIZE\none 1\ntwo 22\n");
        let quiet = ListOpts {
            quiet: true,
            format: Format::Table,
        };
        assert_eq!(l.render(&quiet), "one\ntwo\n");
        let json = ListOpts {
            quiet: false,
            format: Format::Json,
        };
        let parsed: Value = serde_json::from_str(&l.render(&json)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{"id": "one", "size": 1}, {"id": "two", "size": 22}])
        );
        let empty = Listing::new(&["ID"]);
        assert_eq!(empty.render(&json), "[]\n");
    }

    #[test]
    fn labels_sorted() {
        let labels = HashMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        assert_eq!(labels_column(&labels), "a=1,b=2");
        assert_eq!(labels_column(&HashMap::new()), "-");
        assert_eq!(labels_json(&labels).to_string(), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(bytes_binary(0), "0.0 B");
        assert_eq!(bytes_binary(784_486), "766.1 KiB");
        assert_eq!(bytes_binary(3 << 20), "3.0 MiB");
        assert_eq!(bytes_decimal(58), "58B");
        assert_eq!(bytes_decimal(1_234_567), "1.235MB");
        assert_eq!(bytes_decimal(1_000), "1kB");
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(70), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
    }
}
