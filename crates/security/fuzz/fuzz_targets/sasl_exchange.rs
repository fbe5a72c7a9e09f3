//! Fuzz target: a whole SASL exchange as a listener runs it, with the client's messages taken
//! from the input. The first byte picks the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512);
//! the rest is cut into messages, each a big-endian u16 length and that many bytes, fed to one
//! `SaslServer` in order, as a client's SaslAuthenticate requests would be.
//!
//! Any outcome is acceptable except a panic, or a completed exchange that the input could not
//! have earned: the only known user is `user`, whose password the fuzzer cannot know, so
//! `Complete` must never happen.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tidewater_security::sasl::scram::ITERATIONS_MIN;
use tidewater_security::sasl::{CredentialSource, Mechanism, SaslServer, SaslStep, ScramCredential, ScramMechanism};

#[derive(Debug)]
struct OneUser {
    sha256: ScramCredential,
    sha512: ScramCredential,
}

impl CredentialSource for OneUser {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (user == "user").then(|| match mechanism {
            ScramMechanism::Sha256 => self.sha256.clone(),
            ScramMechanism::Sha512 => self.sha512.clone(),
        })
    }
}

fn credentials() -> Arc<dyn CredentialSource> {
    static USERS: OnceLock<Arc<OneUser>> = OnceLock::new();
    USERS
        .get_or_init(|| {
            // A password with 32 random bytes in it: nothing the fuzzer can guess.
            let mut password = [0u8; 32];
            getrandom::getrandom(&mut password).expect("the OS random generator");
            Arc::new(OneUser {
                sha256: ScramCredential::generate(ScramMechanism::Sha256, &password, ITERATIONS_MIN),
                sha512: ScramCredential::generate(ScramMechanism::Sha512, &password, ITERATIONS_MIN),
            })
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else { return };
    let mechanism = Mechanism::ALL[usize::from(selector) % Mechanism::ALL.len()];
    let mut server = SaslServer::new(mechanism, credentials(), "servernonce".to_string());
    while rest.len() >= 2 {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let message = &rest[2..(2 + length).min(rest.len())];
        rest = &rest[(2 + length).min(rest.len())..];
        match server.step(message) {
            Ok(SaslStep::Continue(_)) => {}
            Ok(SaslStep::Complete { principal, .. }) => panic!("authenticated as {principal} without the password"),
            Err(_) => break,
        }
    }
});
