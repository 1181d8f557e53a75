//! A mock provider's script (`[providers.mock]`: rules, regular expressions, reply templates):
//! no panic while it is read and checked, whatever the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_proxy::mock::MockScript;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(script) = toml::from_str::<MockScript>(text) {
        let _ = script.check();
    }
});
