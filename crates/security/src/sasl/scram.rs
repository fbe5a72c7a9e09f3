//! SCRAM (RFC 5802) with SHA-256 and SHA-512 (RFC 7677), server side, and the credential
//! derivation that AlterUserScramCredentials (KIP-554) and the bootstrap user share.
//!
//! The exchange is two round trips:
//!
//! ```text
//! client-first   n,,n=alice,r=<client nonce>
//! server-first   r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final   c=biws,r=<both nonces>,p=<proof>
//! server-final   v=<server signature>
//! ```
//!
//! The server stores no password, only what RFC 5802 calls StoredKey and ServerKey: it checks
//! that the client's proof XORed with `HMAC(StoredKey, AuthMessage)` hashes to StoredKey, and
//! proves itself with `HMAC(ServerKey, AuthMessage)`.
//!
//! An unknown user is not told apart from a wrong password: the server answers the client-first
//! message with a salt derived from the name and a per-process secret, as it would for a real
//! user, and refuses at the proof. Channel binding (`p=` in the GS2 header) and SCRAM extensions
//! (Kafka's `tokenauth` for delegation tokens) are not offered and are refused.

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{CredentialSource, Mechanism, SaslError, SaslStep, USERNAME_BYTES_MAX};
use crate::principal::KafkaPrincipal;

/// Fewest iterations a credential may have: Kafka's minimum for both SCRAM mechanisms.
pub const ITERATIONS_MIN: u32 = 4096;
/// Most iterations a credential may have: Kafka's maximum. Each authentication costs this many
/// HMACs on the client and, for PLAIN, on the server.
pub const ITERATIONS_MAX: u32 = 16384;
/// Iterations of credentials Tidewater makes itself (the bootstrap user, `tidewater user`).
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// Salt length of credentials Tidewater makes itself.
pub const SALT_BYTES: usize = 32;
/// Random bytes in a server nonce.
const SERVER_NONCE_BYTES: usize = 24;

/// The SCRAM hash functions Tidewater offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism's number in Kafka's ScramCredential APIs (0 is UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(kafka_type: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|mechanism| mechanism.kafka_type() == kafka_type)
    }

    /// Bytes in this mechanism's hash, and so in every key and proof.
    pub fn hash_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
            ScramMechanism::Sha512 => hmac_with::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's `Hi(password, salt, iterations)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut output = vec![0u8; self.hash_bytes()];
        match self {
            ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut output),
            ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut output),
        }
        output
    }
}

fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A user's stored SCRAM credential for one mechanism, as Kafka stores it: never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl fmt::Debug for ScramCredential {
    /// Keys are left out: they are as good as the password for logging in.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .field("salt_bytes", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential for `password`, salted with `salt`.
    pub fn from_password(mechanism: ScramMechanism, password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let salted = mechanism.salted_password(password, &salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// The credential for a password already salted by the client (`Hi(password, salt, i)`), as
    /// AlterUserScramCredentials sends it.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// A credential with a fresh random salt.
    pub fn generate(mechanism: ScramMechanism, password: &[u8], iterations: u32) -> Self {
        let mut salt = vec![0u8; SALT_BYTES];
        fill_random(&mut salt);
        ScramCredential::from_password(mechanism, password, salt, iterations)
    }

    /// Whether `password` is this credential's (PLAIN's check), in constant time.
    pub fn verify_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let derived = ScramCredential::from_password(mechanism, password, self.salt.clone(), self.iterations);
        bool::from(derived.stored_key.ct_eq(&self.stored_key))
    }
}

fn fill_random(bytes: &mut [u8]) {
    // The OS's generator failing leaves no safe way on: there is no secret to make without it.
    getrandom::getrandom(bytes).unwrap_or_else(|error| panic!("the OS random generator failed: {error}"));
}

/// A fresh server nonce: random bytes as hex. RFC 5802 allows any printable character but the
/// comma; letters and digits only (as Kafka's nonces are) because librdkafka 2.0 (Debian 12's,
/// which kcat links) mangles a nonce with `=` or `/` in it.
pub(crate) fn random_nonce() -> String {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    fill_random(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The secret that makes unknown users' salts: the same user gets the same salt for the life of
/// the process, as a real user would.
fn unknown_user_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        secret
    })
}

/// The server side of one SCRAM exchange.
pub(crate) struct ScramServer {
    mechanism: ScramMechanism,
    credentials: Arc<dyn CredentialSource>,
    server_nonce: String,
    state: ScramState,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("ScramServer").field("mechanism", &self.mechanism).finish_non_exhaustive()
    }
}

enum ScramState {
    AwaitingClientFirst,
    AwaitingClientFinal(Box<FirstExchange>),
    Done,
}

/// What the first round trip settled.
struct FirstExchange {
    user: String,
    /// The GS2 header exactly as the client sent it; `c=` must carry it back.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// `None` for an unknown user, who is answered with a made-up salt and refused at the proof.
    credential: Option<ScramCredential>,
}

impl ScramServer {
    pub(crate) fn new(
        mechanism: ScramMechanism,
        credentials: Arc<dyn CredentialSource>,
        server_nonce: String,
    ) -> ScramServer {
        ScramServer { mechanism, credentials, server_nonce, state: ScramState::AwaitingClientFirst }
    }

    pub(crate) fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    pub(crate) fn step(&mut self, message: &[u8]) -> Result<SaslStep, SaslError> {
        match std::mem::replace(&mut self.state, ScramState::Done) {
            ScramState::AwaitingClientFirst => {
                let exchange = self.client_first(message)?;
                let challenge = exchange.server_first.clone().into_bytes();
                self.state = ScramState::AwaitingClientFinal(Box::new(exchange));
                Ok(SaslStep::Continue(challenge))
            }
            ScramState::AwaitingClientFinal(exchange) => self.client_final(&exchange, message),
            ScramState::Done => Err(SaslError::OutOfOrder { mechanism: Mechanism::Scram(self.mechanism) }),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> SaslError {
        SaslError::Malformed { mechanism: Mechanism::Scram(self.mechanism), reason: reason.into() }
    }

    fn client_first(&self, message: &[u8]) -> Result<FirstExchange, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("client-first is not UTF-8"))?;
        // GS2 header: a channel-binding flag, then an optional authorization id.
        let (flag, rest) = text.split_once(',').ok_or_else(|| self.malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            flag if flag.starts_with("p=") => return Err(self.malformed("channel binding is not supported")),
            _ => return Err(self.malformed("the GS2 header must start with n, y or p=")),
        }
        let (authorization, bare) = rest.split_once(',').ok_or_else(|| self.malformed("no GS2 header"))?;
        let authorization_id = match authorization {
            "" => None,
            authorization => Some(
                authorization
                    .strip_prefix("a=")
                    .map(|name| self.sasl_name(name))
                    .ok_or_else(|| self.malformed("the authorization id must be a=name"))??,
            ),
        };
        let gs2_header = text[..text.len() - bare.len()].to_string();
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(field) if field.starts_with("m=") => {
                return Err(self.malformed("mandatory extensions are not supported"))
            }
            Some(field) => field.strip_prefix("n=").ok_or_else(|| self.malformed("no user name (n=)"))?,
            None => return Err(self.malformed("no user name (n=)")),
        };
        let user = self.sasl_name(user)?;
        if user.is_empty() {
            return Err(self.malformed("the user name is empty"));
        }
        if user.len() > USERNAME_BYTES_MAX {
            return Err(self.malformed(format!("the user name is over {USERNAME_BYTES_MAX} bytes")));
        }
        let client_nonce = fields
            .next()
            .and_then(|field| field.strip_prefix("r="))
            .ok_or_else(|| self.malformed("no client nonce (r=)"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(is_nonce_byte) {
            return Err(self.malformed("the client nonce must be printable ASCII without commas"));
        }
        if let Some(extension) = fields.next() {
            let name = extension.split('=').next().unwrap_or_default();
            return Err(self.malformed(format!("SCRAM extension {name:?} is not supported")));
        }
        if let Some(authorization_id) = &authorization_id {
            if authorization_id != &user {
                return Err(SaslError::AuthorizationIdMismatch {
                    mechanism: Mechanism::Scram(self.mechanism),
                    user,
                    authorization_id: authorization_id.clone(),
                });
            }
        }
        let credential = self.credentials.scram_credential(&user, self.mechanism);
        let (salt, iterations) = match &credential {
            Some(credential) => (credential.salt.clone(), credential.iterations),
            None => (self.unknown_user_salt(&user), ITERATIONS_DEFAULT),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
        Ok(FirstExchange {
            user,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            credential,
        })
    }

    fn client_final(&self, exchange: &FirstExchange, message: &[u8]) -> Result<SaslStep, SaslError> {
        let mechanism = Mechanism::Scram(self.mechanism);
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) =
            text.rsplit_once(",p=").ok_or_else(|| self.malformed("no proof (p=) at the end"))?;
        let mut fields = without_proof.split(',');
        let channel_binding = fields
            .next()
            .and_then(|field| field.strip_prefix("c="))
            .ok_or_else(|| self.malformed("no channel binding (c=)"))?;
        if channel_binding != BASE64.encode(&exchange.gs2_header) {
            return Err(self.malformed("the channel binding does not repeat the GS2 header"));
        }
        let nonce = fields
            .next()
            .and_then(|field| field.strip_prefix("r="))
            .ok_or_else(|| self.malformed("no nonce (r=)"))?;
        // librdkafka before 2.1 (Debian 12's 2.0.2, which kcat links) sends its own nonce in
        // front of the combined one, and Kafka brokers of that time accepted it. That form alone
        // is taken too: the proof covers this message and the server's fresh nonce either way.
        let client_nonce = &exchange.nonce[..exchange.nonce.len() - self.server_nonce.len()];
        let repeated = nonce.len() == client_nonce.len() + exchange.nonce.len()
            && nonce.starts_with(client_nonce)
            && nonce.ends_with(&exchange.nonce);
        if nonce != exchange.nonce && !repeated {
            return Err(self.malformed("the nonce is not the one the server sent"));
        }
        if fields.next().is_some() {
            return Err(self.malformed("SCRAM extensions are not supported"));
        }
        let proof = BASE64.decode(proof).map_err(|_| self.malformed("the proof is not base64"))?;
        let Some(credential) = &exchange.credential else {
            return Err(SaslError::UnknownUser { mechanism, user: exchange.user.clone() });
        };
        let auth_message =
            format!("{},{},{without_proof}", exchange.client_first_bare, exchange.server_first);
        let client_signature = self.mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(SaslError::BadCredentials { mechanism, user: exchange.user.clone() });
        }
        let client_key: Vec<u8> =
            proof.iter().zip(&client_signature).map(|(proof, signature)| proof ^ signature).collect();
        if !bool::from(self.mechanism.hash(&client_key).ct_eq(&credential.stored_key)) {
            return Err(SaslError::BadCredentials { mechanism, user: exchange.user.clone() });
        }
        let server_signature = self.mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(SaslStep::Complete {
            response: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            principal: KafkaPrincipal::user(exchange.user.clone()),
        })
    }

    /// RFC 5802's `saslname`: `=2C` is a comma and `=3D` an equals sign; any other `=` is an
    /// error.
    fn sasl_name(&self, name: &str) -> Result<String, SaslError> {
        let mut decoded = String::with_capacity(name.len());
        let mut rest = name;
        while let Some(at) = rest.find('=') {
            decoded.push_str(&rest[..at]);
            match rest.get(at..at + 3) {
                Some("=2C") => decoded.push(','),
                Some("=3D") => decoded.push('='),
                _ => return Err(self.malformed("a name has '=' that is not =2C or =3D")),
            }
            rest = &rest[at + 3..];
        }
        decoded.push_str(rest);
        Ok(decoded)
    }

    fn unknown_user_salt(&self, user: &str) -> Vec<u8> {
        let mut salt = self.mechanism.hmac(unknown_user_secret(), user.as_bytes());
        salt.truncate(SALT_BYTES);
        salt
    }
}

/// The client side of SCRAM, for Tidewater's own load generator and tests (the components use
/// librdkafka's). It keeps the salted password of the last salt and iteration count it saw, as
/// RFC 5802 allows, so reconnecting as the same user costs two HMACs, not a PBKDF2.
#[derive(Clone)]
pub struct ScramClient {
    mechanism: ScramMechanism,
    user: String,
    password: Vec<u8>,
    salted: Option<(Vec<u8>, u32, Vec<u8>)>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A client exchange between its first message and the server's answer to its last.
#[derive(Debug)]
pub struct ScramClientExchange {
    client_first_bare: String,
    client_nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &[u8]) -> ScramClient {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient { mechanism, user, password: password.to_vec(), salted: None }
    }

    /// The client-first message, and the exchange it starts.
    pub fn first(&self) -> (Vec<u8>, ScramClientExchange) {
        let client_nonce = random_nonce();
        let client_first_bare = format!("n={},r={client_nonce}", self.user);
        let message = format!("n,,{client_first_bare}").into_bytes();
        (message, ScramClientExchange { client_first_bare, client_nonce, expected_server_signature: None })
    }

    /// The client-final message for the server-first one.
    pub fn last(
        &mut self,
        exchange: &mut ScramClientExchange,
        server_first: &[u8],
    ) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|field| field.strip_prefix(name))
                .ok_or_else(|| format!("server-first has no {name}"))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&exchange.client_nonce) {
            return Err("the server's nonce does not extend ours".to_string());
        }
        let salt = BASE64.decode(field("s=")?).map_err(|_| "the salt is not base64")?;
        let iterations: u32 = field("i=")?.parse().map_err(|_| "the iteration count is not a number")?;
        let salted = match &self.salted {
            Some((kept_salt, kept_iterations, salted))
                if *kept_salt == salt && *kept_iterations == iterations =>
            {
                salted.clone()
            }
            _ => {
                let salted = self.mechanism.salted_password(&self.password, &salt, iterations);
                self.salted = Some((salt, iterations, salted.clone()));
                salted
            }
        };
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        let stored_key = self.mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", exchange.client_first_bare);
        let signature = self.mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.iter().zip(&signature).map(|(key, signature)| key ^ signature).collect();
        let server_key = self.mechanism.hmac(&salted, b"Server Key");
        exchange.expected_server_signature = Some(self.mechanism.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it knows the credential.
    pub fn verify(&self, exchange: &ScramClientExchange, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        let signature = text
            .strip_prefix("v=")
            .and_then(|signature| BASE64.decode(signature).ok())
            .ok_or_else(|| format!("server-final is not v=<signature>: {text}"))?;
        match &exchange.expected_server_signature {
            Some(expected) if bool::from(expected.ct_eq(&signature)) => Ok(()),
            _ => Err("the server's signature is wrong".to_string()),
        }
    }
}

/// RFC 5802's `printable`, the characters of a nonce: 0x21-0x7E except the comma.
fn is_nonce_byte(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && byte != b','
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sasl::SaslServer;

    #[derive(Debug, Default)]
    struct Users(HashMap<(String, ScramMechanism), ScramCredential>);

    impl CredentialSource for Users {
        fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    /// RFC 7677 section 3's exchange, byte for byte.
    #[test]
    fn rfc_7677_test_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential = ScramCredential::from_password(ScramMechanism::Sha256, b"pencil", salt, 4096);
        let users = Users(HashMap::from([(("user".to_string(), ScramMechanism::Sha256), credential)]));
        let mut server = SaslServer::new(
            Mechanism::Scram(ScramMechanism::Sha256),
            Arc::new(users),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string(),
        );
        let first = server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("client-first");
        assert_eq!(
            first,
            SaslStep::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = server
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("client-final");
        assert_eq!(
            last,
            SaslStep::Complete {
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                principal: KafkaPrincipal::user("user"),
            }
        );
        assert_eq!(
            server.step(b"n,,n=user,r=again"),
            Err(SaslError::OutOfOrder { mechanism: server.mechanism() })
        );
    }

    /// Our client against our server: the whole exchange for each mechanism with the right and
    /// a wrong password and an unknown user, and a second login reusing the salted password.
    #[test]
    fn exchanges_succeed_only_with_the_right_password() {
        for mechanism in ScramMechanism::ALL {
            let credential = ScramCredential::generate(mechanism, b"s3cret", ITERATIONS_MIN);
            let users = Arc::new(Users(HashMap::from([(("alice".to_string(), mechanism), credential)])));
            let login = |client: &mut ScramClient| -> Result<KafkaPrincipal, SaslError> {
                let mut server = SaslServer::with_random_nonce(Mechanism::Scram(mechanism), users.clone());
                let (first, mut exchange) = client.first();
                let SaslStep::Continue(server_first) = server.step(&first)? else { panic!("no challenge") };
                let last = client.last(&mut exchange, &server_first).expect("client-final");
                match server.step(&last)? {
                    SaslStep::Complete { response, principal } => {
                        client.verify(&exchange, &response).expect("the server's signature");
                        Ok(principal)
                    }
                    SaslStep::Continue(_) => panic!("a third round trip"),
                }
            };
            let mut alice = ScramClient::new(mechanism, "alice", b"s3cret");
            assert_eq!(login(&mut alice), Ok(KafkaPrincipal::user("alice")));
            assert_eq!(
                login(&mut alice),
                Ok(KafkaPrincipal::user("alice")),
                "again, with the kept salted password"
            );
            let mut wrong = ScramClient::new(mechanism, "alice", b"wrong");
            assert!(matches!(login(&mut wrong), Err(SaslError::BadCredentials { .. })));
            let mut unknown = ScramClient::new(mechanism, "mallory", b"s3cret");
            assert!(matches!(login(&mut unknown), Err(SaslError::UnknownUser { .. })));
        }
    }

    #[test]
    fn unknown_users_get_a_stable_salt_like_real_ones() {
        let users: Arc<dyn CredentialSource> = Arc::new(Users::default());
        let challenge = || {
            let mut server =
                SaslServer::new(Mechanism::Scram(ScramMechanism::Sha512), users.clone(), "s".to_string());
            server.step(b"n,,n=ghost,r=abc").expect("a challenge, as for a real user")
        };
        assert_eq!(challenge(), challenge());
    }

    #[test]
    fn malformed_client_first_messages_are_refused_with_a_reason() {
        let users: Arc<dyn CredentialSource> = Arc::new(Users::default());
        let check = |message: &[u8], reason: &str| {
            let mut server =
                SaslServer::new(Mechanism::Scram(ScramMechanism::Sha256), users.clone(), "s".to_string());
            match server.step(message) {
                Err(SaslError::Malformed { reason: actual, .. }) => {
                    assert!(actual.contains(reason), "{:?}: {actual:?}", String::from_utf8_lossy(message))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(message)),
            }
        };
        check(b"", "GS2");
        check(b"n", "GS2");
        check(b"x,,n=a,r=b", "GS2 header must");
        check(b"p=tls-unique,,n=a,r=b", "channel binding");
        check(b"n,z,n=a,r=b", "a=name");
        check(b"n,,m=ext,n=a,r=b", "mandatory");
        check(b"n,,r=b", "user name");
        check(b"n,,n=,r=b", "empty");
        check(b"n,,n=a=2,r=b", "=2C");
        check(b"n,,n=a", "nonce");
        check(b"n,,n=a,r=", "nonce");
        check(b"n,,n=a,r=b c", "nonce");
        check(b"n,,n=a,r=b,tokenauth=true", "tokenauth");
        check(b"n,,n=\xff,r=b", "UTF-8");
        check(format!("n,,n={},r=b", "u".repeat(USERNAME_BYTES_MAX + 1)).as_bytes(), "over");
    }

    #[test]
    fn escaped_names_and_a_matching_authorization_id_are_accepted() {
        let users = Arc::new(Users::default());
        let mut server = SaslServer::new(Mechanism::Scram(ScramMechanism::Sha256), users, "s".to_string());
        assert!(matches!(server.step(b"n,a=x=2Cy=3Dz,n=x=2Cy=3Dz,r=abc"), Ok(SaslStep::Continue(_))));
        let users = Arc::new(Users::default());
        let mut server = SaslServer::new(Mechanism::Scram(ScramMechanism::Sha256), users, "s".to_string());
        assert!(matches!(
            server.step(b"n,a=bob,n=alice,r=abc"),
            Err(SaslError::AuthorizationIdMismatch { .. })
        ));
    }

    #[test]
    fn client_final_messages_that_do_not_follow_the_first_are_refused() {
        let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", ITERATIONS_MIN);
        let users: Arc<dyn CredentialSource> =
            Arc::new(Users(HashMap::from([(("alice".to_string(), ScramMechanism::Sha256), credential)])));
        let check = |final_message: &str, expected: &str| {
            let mut server =
                SaslServer::new(Mechanism::Scram(ScramMechanism::Sha256), users.clone(), "S".to_string());
            server.step(b"n,,n=alice,r=C").expect("client-first");
            let outcome = server.step(final_message.as_bytes());
            let text = format!("{outcome:?}");
            assert!(text.contains(expected), "{final_message}: {text}");
        };
        check("c=biws,r=CS", "no proof");
        check("c=eSws,r=CS,p=AAAA", "does not repeat");
        check("c=biws,r=CX,p=AAAA", "not the one");
        check("c=biws,r=XCS,p=AAAA", "not the one");
        // librdkafka 2.0's client nonce in front of the combined one is accepted as far as the
        // proof, which is then checked.
        check("c=biws,r=CCS,p=AAAA", "BadCredentials");
        check("c=biws,r=CS,x=1,p=AAAA", "extensions");
        check("c=biws,r=CS,p=!!", "not base64");
        check("c=biws,r=CS,p=AAAA", "BadCredentials");
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let credential = ScramCredential::generate(ScramMechanism::Sha256, b"pw", ITERATIONS_MIN);
        let text = format!("{credential:?}");
        assert!(!text.contains("stored_key") && !text.contains("server_key"), "{text}");
    }

    #[test]
    fn passwords_verify_against_their_credential_only() {
        for mechanism in ScramMechanism::ALL {
            let credential = ScramCredential::generate(mechanism, b"right", ITERATIONS_MIN);
            assert!(credential.verify_password(mechanism, b"right"));
            assert!(!credential.verify_password(mechanism, b"wrong"));
        }
    }
}
