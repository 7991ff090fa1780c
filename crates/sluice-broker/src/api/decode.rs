//! Decoding a request frame into the `kafka-protocol` crate's types.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use super::versions::supported;

/// A request frame, decoded.
pub enum Decoded {
    Request(RequestHeader, Box<RequestKind>),
    /// ApiVersions at a version we do not speak: answered, not refused.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Decodes one request frame (without its size prefix): the API key and
/// version must be ones Sluice serves, and header and body must decode
/// from the frame's bytes alone. The error says why not; the connection
/// that sent it is closed.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, String> {
    if frame.len() < 8 {
        return Err(format!("request header truncated ({} bytes)", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| format!("unknown API key {key}"))?;
    let Some((lo, hi)) = supported(api) else {
        return Err(format!("{api:?} (key {key}) is not supported"));
    };
    if !(lo..=hi).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!("{api:?} v{version} is not supported (v{lo}–v{hi})"));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| format!("bad {api:?} v{version} request header: {e}"))?;
    let request = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| format!("bad {api:?} v{version} request body: {e:#}"))?;
    Ok(Decoded::Request(header, Box::new(request)))
}
