//! Which API versions the broker speaks, and the ApiVersions exchange built on that table.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// One API and the inclusive range of versions the broker implements for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub api_key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// The broker's table of supported APIs.
#[derive(Debug, Clone)]
pub struct SupportedVersions {
    ranges: Vec<ApiRange>,
}

/// ApiVersions itself: 0-4. Versions 3 and up are flexible (tagged fields).
pub const API_VERSIONS_RANGE: ApiRange = ApiRange { api_key: ApiKey::ApiVersions, min: 0, max: 4 };
/// The APIs the protocol server answers itself, on every listener, whatever the handler
/// supports: ApiVersions and SASL authentication (a handshake v0 is followed by bare tokens;
/// SaslAuthenticate v1 adds the session lifetime of KIP-368).
pub const SERVER_RANGES: [ApiRange; 3] = [
    API_VERSIONS_RANGE,
    ApiRange { api_key: ApiKey::SaslHandshake, min: 0, max: 1 },
    ApiRange { api_key: ApiKey::SaslAuthenticate, min: 0, max: 2 },
];

impl SupportedVersions {
    /// The table: the server's own APIs (`SERVER_RANGES`) are always included; each range must
    /// lie within what the codec can decode.
    pub fn new(ranges: &[ApiRange]) -> Self {
        let mut all = SERVER_RANGES.to_vec();
        for range in ranges {
            let codec = range.api_key.valid_versions();
            assert!(
                range.min >= codec.min && range.max <= codec.max && range.min <= range.max,
                "{:?} {}-{} is outside what the codec decodes ({}-{})",
                range.api_key,
                range.min,
                range.max,
                codec.min,
                codec.max
            );
            all.push(*range);
        }
        all.sort_by_key(|range| range.api_key as i16);
        all.dedup_by_key(|range| range.api_key as i16);
        SupportedVersions { ranges: all }
    }

    pub fn supports(&self, api_key: ApiKey, version: i16) -> bool {
        self.ranges.iter().any(|range| range.api_key == api_key && (range.min..=range.max).contains(&version))
    }

    pub fn ranges(&self) -> &[ApiRange] {
        &self.ranges
    }

    /// The ApiVersions response: our ranges, with UNSUPPORTED_VERSION when the client asked with a
    /// version we do not speak (it then retries with one from our range, as KIP-511 describes).
    pub fn api_versions_response(&self, unsupported: bool) -> ApiVersionsResponse {
        let api_keys = self
            .ranges
            .iter()
            .map(|range| {
                ApiVersion::default()
                    .with_api_key(range.api_key as i16)
                    .with_min_version(range.min)
                    .with_max_version(range.max)
            })
            .collect();
        let error_code = if unsupported { ResponseError::UnsupportedVersion.code() } else { 0 };
        ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
    }
}
