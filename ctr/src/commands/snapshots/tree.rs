//! `berth snapshots tree`: Snapshots.List drawn parent first (ctr `printTree`).

use std::collections::HashMap;

use anyhow::Result;

use super::list_all;
use crate::client::Client;

/// Flags of `snapshots tree` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Builds the tree text from (name, parent) pairs in listing order.
pub fn render(nodes: &[(String, String)]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut parents: HashMap<String, String> = HashMap::new();
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    for (name, parent) in nodes {
        if !parents.contains_key(name) && !children.contains_key(name) {
            order.push(name.clone());
        }
        parents.insert(name.clone(), parent.clone());
        if !parent.is_empty() {
            if !parents.contains_key(parent) && !children.contains_key(parent) {
                // Placeholder for a parent not listed (yet).
                order.push(parent.clone());
                parents.insert(parent.clone(), String::new());
            }
            children
                .entry(parent.clone())
                .or_default()
                .push(name.clone());
        }
    }
    let mut out = String::new();
    fn node(name: &str, level: usize, children: &HashMap<String, Vec<String>>, out: &mut String) {
        let mut prefix = "  ".repeat(level);
        if level > 0 {
            prefix.push_str("\\_");
        }
        out.push_str(&format!("{prefix} {name}\n"));
        for child in children.get(name).into_iter().flatten() {
            node(child, level + 1, children, out);
        }
    }
    for name in &order {
        if parents.get(name).is_none_or(String::is_empty) {
            node(name, 0, &children, &mut out);
        }
    }
    out
}

/// Prints the tree.
pub async fn run(client: &Client, snapshotter: &str, _args: Args) -> Result<()> {
    let infos = list_all(client, snapshotter, Vec::new()).await?;
    let pairs: Vec<(String, String)> = infos.into_iter().map(|i| (i.name, i.parent)).collect();
    print!("{}", render(&pairs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_children_under_parents() {
        let pairs = vec![
            ("b".to_owned(), "a".to_owned()),
            ("a".to_owned(), String::new()),
            ("c".to_owned(), "b".to_owned()),
        ];
        assert_eq!(render(&pairs), " a\n  \\_ b\n    \\_ c\n");
    }
}
