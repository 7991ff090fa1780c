//! Kafka's request framing, shared by [`Client`](crate::Client) and by code
//! that needs the raw frames (the broker's tests send malformed ones): a
//! 4-byte big-endian size, then a request header and body.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::ClientError;

/// The largest response frame [`read_frame`] accepts by default: a size
/// beyond it is a corrupt stream, not a response to allocate for.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

fn api_key<R: Request>() -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol(format!("unknown API key {}", R::KEY)))
}

/// One request as a whole frame: the size prefix, the header (version
/// `version`, `correlation_id`, `client_id`) and the body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<StrBytes>,
) -> Result<BytesMut, ClientError> {
    let key = api_key::<R>()?;
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = client_id;
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, key.request_header_version(version))
        .and_then(|_| req.encode(&mut buf, version))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| ClientError::Protocol(format!("request of {} bytes", buf.len())))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

/// Reads one frame and returns it without its size prefix; a size outside
/// `0..=max` is a protocol error.
pub fn read_frame(stream: &mut impl Read, max: usize) -> Result<Bytes, ClientError> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            // A TLS record header (handshake or alert, version 3.x): a
            // plaintext client on a TLS listener.
            if matches!(size.to_be_bytes(), [0x15 | 0x16, 0x03, 0..=0x04, _]) {
                ClientError::Protocol(format!(
                    "response size {size}: the broker answered in TLS; \
                     connect with security.protocol SSL or SASL_SSL"
                ))
            } else {
                ClientError::Protocol(format!("response size {size}"))
            }
        })?;
    // `take` + `read_to_end` reads into spare capacity without zeroing it
    // first (a fetch response may be megabytes).
    let mut frame = Vec::with_capacity(len);
    stream.take(len as u64).read_to_end(&mut frame)?;
    if frame.len() != len {
        return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Bytes::from(frame))
}

/// Decodes a response frame (without its size) to a request of type `R` sent
/// at `version`, checking that it answers `correlation_id` (responses come
/// in request order).
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, ClientError> {
    let key = api_key::<R>()?;
    let h = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if h.correlation_id != correlation_id {
        return Err(ClientError::Protocol(format!(
            "response out of order: correlation id {} where {correlation_id} was next",
            h.correlation_id
        )));
    }
    R::Response::decode(&mut frame, version).map_err(|e| ClientError::Protocol(e.to_string()))
}
