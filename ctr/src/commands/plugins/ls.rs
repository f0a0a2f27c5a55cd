//! `berth plugins ls`: Introspection.Plugins with the arguments as filters; `TYPE ID PLATFORMS STATUS`.

use anyhow::Result;
use berth_proto::containerd::services::introspection::v1::{Plugin, PluginsRequest};
use serde_json::json;

use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::output::{labels_json, ListOpts, Listing, Table};

/// Flags of `plugins ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub list: ListOpts,
    /// Print detailed information about each plugin.
    #[arg(short, long)]
    pub detailed: bool,
    /// Filters (`type==…`, `id==…`).
    pub filters: Vec<String>,
}

/// `-` or the sorted platforms joined by `,`.
fn platforms(p: &Plugin) -> String {
    let mut list: Vec<String> = p
        .platforms
        .iter()
        .map(|pl| {
            let mut s = format!("{}/{}", pl.os, pl.architecture);
            if !pl.variant.is_empty() {
                s.push('/');
                s.push_str(&pl.variant);
            }
            s
        })
        .collect();
    list.sort();
    list.dedup();
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(",")
    }
}

/// `ok`, `skip` (init error says "skip plugin") or `error`.
fn status(p: &Plugin) -> &'static str {
    match &p.init_err {
        None => "ok",
        Some(e) if e.message.contains("skip plugin") => "skip",
        Some(_) => "error",
    }
}

/// Lists the plugins.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let plugins = client
        .introspection()
        .plugins(client.req(PluginsRequest {
            filters: args.filters.clone(),
        }))
        .await
        .rpc(client, "list", Object::kind("plugins"))?
        .into_inner()
        .plugins;
    if args.detailed && !args.list.quiet && args.list.format == crate::output::Format::Table {
        print!("{}", detailed(&plugins));
        return Ok(());
    }
    let mut listing = Listing::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
    for p in &plugins {
        let mut exports: Vec<_> = p.exports.iter().collect();
        exports.sort();
        listing.push(
            p.id.clone(),
            vec![
                p.r#type.clone(),
                p.id.clone(),
                platforms(p),
                status(p).to_owned(),
            ],
            json!({
                "type": p.r#type,
                "id": p.id,
                "platforms": platforms(p),
                "status": status(p),
                "requires": p.requires,
                "exports": labels_json(&p.exports),
                "capabilities": p.capabilities,
                "error": p.init_err.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
            }),
        );
    }
    listing.print(&args.list)?;
    Ok(())
}

/// ctr's `-d` block per plugin.
fn detailed(plugins: &[Plugin]) -> String {
    let mut out = String::new();
    for (i, p) in plugins.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut t = Table::default();
        t.row(vec!["Type:".into(), p.r#type.clone()]);
        t.row(vec!["ID:".into(), p.id.clone()]);
        if !p.requires.is_empty() {
            t.row(vec!["Requires:".into()]);
            for r in &p.requires {
                t.row(vec![String::new(), r.clone()]);
            }
        }
        if !p.platforms.is_empty() {
            t.row(vec!["Platforms:".into(), platforms(p)]);
        }
        if !p.exports.is_empty() {
            t.row(vec!["Exports:".into()]);
            let mut exports: Vec<_> = p.exports.iter().collect();
            exports.sort();
            for (k, v) in exports {
                t.row(vec![String::new(), k.clone(), v.clone()]);
            }
        }
        if !p.capabilities.is_empty() {
            t.row(vec!["Capabilities:".into(), p.capabilities.join(",")]);
        }
        if let Some(e) = &p.init_err {
            t.row(vec!["Error:".into()]);
            t.row(vec![
                String::new(),
                "Code:".into(),
                tonic::Code::from(e.code).to_string(),
            ]);
            t.row(vec![String::new(), "Message:".into(), e.message.clone()]);
        }
        // Table::default has no header row; render keeps rows as given.
        out.push_str(&t.render());
    }
    out
}
