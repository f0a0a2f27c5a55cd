//! containerd's filter language (`berth_filters`), the parser behind every List RPC's
//! `filters` field: any client can send any string.
//!
//! Input: UTF-8 text. Lines before the first NUL are filter strings (one List request's
//! `filters`); lines after it are `path=value` fields of the object matched against.
//! Checks: no panic, errors point inside their input, `parse_any` of one string agrees with
//! `parse`, and matching is deterministic.

#![no_main]

use berth_filters::{parse, parse_any, MapAdaptor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (filters, object) = text.split_once('\0').unwrap_or((text, ""));
    let inputs: Vec<&str> = filters.split('\n').collect();
    let fields: MapAdaptor = object
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .collect();
    // An adaptor that has every field, so every selector's operator and value are evaluated.
    let everything = |path: &[String]| Some(path.join("."));

    let mut any_ok = true;
    for input in &inputs {
        match parse(input) {
            Ok(filter) => {
                let one = filter.matches(&fields);
                assert_eq!(
                    one,
                    filter.matches(&fields),
                    "matching {input:?} is not stable"
                );
                let _ = filter.matches(&everything);
                let single = parse_any(&[input]).expect("parse_any accepts what parse accepts");
                assert_eq!(
                    single.matches(&fields),
                    one,
                    "parse_any([{input:?}]) differs"
                );
            }
            Err(e) => {
                any_ok = false;
                assert_eq!(e.input(), *input, "the error names another input");
                assert!(
                    e.position() <= input.len(),
                    "error position {} past the end of {input:?} ({e})",
                    e.position()
                );
                let _ = e.to_string();
                assert!(parse_any(&[input]).is_err(), "parse_any accepts {input:?}");
            }
        }
    }
    match parse_any(&inputs) {
        Ok(filter) => {
            assert!(
                any_ok,
                "parse_any accepted a list holding an invalid filter"
            );
            let _ = filter.matches(&fields);
            let _ = filter.matches(&everything);
        }
        Err(_) => assert!(!any_ok, "parse_any refused a list of valid filters"),
    }
});
