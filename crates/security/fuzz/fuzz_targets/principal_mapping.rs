//! Fuzz target: `ssl.principal.mapping.rules` text and a distinguished name, both from the
//! input (split at the first NUL). Parsing any text and applying parsed rules to any name must
//! never panic; an error is a fine answer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewater_security::principal_mapping::PrincipalMapping;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (rules, name) = text.split_once('\0').unwrap_or((&text, "CN=alice,OU=eng,O=Acme"));
    if let Ok(mapping) = PrincipalMapping::parse(rules) {
        let _ = mapping.apply(name);
    }
});
