//! Encoding a non-Fetch response: header and body into one buffer, handed
//! to the sender as it is (no copy of the whole response).

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

use super::{ApiError, Part};

/// The response frame, size prefix included.
pub fn response(
    api: ApiKey,
    version: i16,
    correlation: i32,
    response: &ResponseKind,
) -> Result<Vec<Part>, ApiError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation;
    header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| response.encode(&mut buf, version))
        .map_err(|e| ApiError::Internal(format!("encoding {api:?} v{version} response: {e}")))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| ApiError::Internal(format!("{api:?} response over 2 GiB")))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(vec![Part::Bytes(buf.freeze())])
}
