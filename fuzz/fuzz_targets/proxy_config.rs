//! The proxy's configuration file (`Config::from_toml_str`), including the mock scripts and MCP
//! server entries in it: no panic, and an API key read from the environment never shows in the
//! configuration's `Debug` or in an error message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_proxy::Config;

const KEY_VAR: &str = "SWITCHYARD_FUZZ_KEY";
const KEY: &str = "sk-fuzz-8d1f0c5e";

/// Drops every `api_key_file` key: the parser reads the named file, and a fuzzer soon names
/// `/dev/zero` or `/dev/stdin`, which never end.
fn without_key_files(value: &mut toml::Value) -> bool {
    let mut removed = false;
    match value {
        toml::Value::Table(table) => {
            removed |= table.remove("api_key_file").is_some();
            for (_, v) in table.iter_mut() {
                removed |= without_key_files(v);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                removed |= without_key_files(v);
            }
        }
        _ => {}
    }
    removed
}

fuzz_target!(
    init: {
        // SAFETY: set once, before the fuzzer runs anything on any other thread.
        unsafe { std::env::set_var(KEY_VAR, KEY) };
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        // Only the environment may bring the key in; an input that names it proves nothing.
        if text.contains(KEY) {
            return;
        }
        let mut text = text.to_owned();
        if let Ok(table) = text.parse::<toml::Table>() {
            let mut value = toml::Value::Table(table);
            if without_key_files(&mut value) {
                match toml::to_string(&value) {
                    Ok(t) => text = t,
                    Err(_) => return,
                }
            }
        }
        match Config::from_toml_str(&text, "fuzz") {
            Ok(config) => assert!(!format!("{config:?}").contains(KEY), "{config:?}"),
            Err(e) => assert!(!e.to_string().contains(KEY), "{e}"),
        }
    }
);
