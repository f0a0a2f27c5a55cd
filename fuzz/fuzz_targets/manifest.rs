//! Image index, manifest and config documents (`berth_transfer::manifest`): what a registry or
//! an imported archive serves is parsed before anything is verified against it.
//!
//! Input: one JSON document, read as each of the kinds. Checks: no panic; an index's entries
//! chosen for a platform are entries of that index; a media type sniffed is one of the four
//! Berth supports.

#![no_main]

use berth_transfer::manifest::{
    parse_config, parse_index, parse_manifest, select_entries, sniff_media_type,
};
use berth_transfer::types::{chain_ids, ingest_ref, is_index, is_manifest, valid_digest, Platform};
use libfuzzer_sys::fuzz_target;

/// The digest the parsers put in their errors.
const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    if let Ok(media_type) = sniff_media_type(data, DIGEST) {
        assert!(
            is_index(&media_type) || is_manifest(&media_type),
            "sniffed unsupported media type {media_type:?}"
        );
    }
    if let Ok(index) = parse_index(data, DIGEST) {
        assert_eq!(select_entries(&index, None).len(), index.manifests.len());
        let mut wants = vec![Platform::host(), Platform::new("linux", "arm")];
        // The platforms the document names, as a user would ask for them with `--platform`.
        wants.extend(
            index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter_map(|p| Platform::parse(&p.to_string())),
        );
        for want in &wants {
            for chosen in select_entries(&index, Some(want)) {
                assert!(
                    index.manifests.iter().any(|d| std::ptr::eq(d, chosen)),
                    "select_entries returned a descriptor not in the index"
                );
                let _ = want.matches(chosen.platform.as_ref().unwrap_or(want));
            }
        }
        for desc in &index.manifests {
            let _ = ingest_ref(desc);
            let _ = valid_digest(&desc.digest);
        }
    }
    if let Ok(manifest) = parse_manifest(data, DIGEST) {
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let _ = ingest_ref(desc);
            let _ = valid_digest(&desc.digest);
        }
    }
    if let Ok(config) = parse_config(data, DIGEST) {
        let chain = chain_ids(&config.diff_ids);
        assert_eq!(chain.len(), config.diff_ids.len());
        assert_eq!(chain.first(), config.diff_ids.first());
    }
});
