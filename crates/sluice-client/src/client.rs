//! A small blocking Kafka client on the `kafka-protocol` crate: what the
//! console tools (`sluice produce`, `sluice consume`, `sluice topic`) and the
//! load generator need, against Sluice or any Kafka-compatible broker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::error::io_error;
use crate::security::{self, ClientSecurity, SaslConfig};
use crate::{ClientError, wire};

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    /// (partition, leader broker id), by partition.
    pub partitions: Vec<(i32, i32)>,
    /// Each partition's leader epoch, replicas and ISR, by partition.
    pub replicas: Vec<PartitionReplicas>,
}

/// Where a partition's replicas are, as Metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub partition: i32,
    /// −1 while the partition has no leader.
    pub leader: i32,
    /// −1 from a broker that does not report epochs.
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// One connection to a broker.
///
/// Over SASL it keeps its session alive as Kafka's clients do (KIP-368):
/// when the broker gives the session a lifetime, the client logs in again
/// on the open connection (SaslHandshake, SaslAuthenticate) before the
/// first request it sends after a random 85–95 % of that lifetime — and
/// only when no response is outstanding, so re-authentication never comes
/// between a request and its response.
pub struct Client {
    stream: Stream,
    correlation: i32,
    client_id: StrBytes,
    /// Requests written whose responses have not been read.
    outstanding: usize,
    /// The login to repeat and when, while the session has a lifetime.
    reauth: Option<Reauth>,
    /// Re-authentications done on this connection.
    reauthentications: u64,
}

/// KIP-368: how this connection logged in, and when to log in again.
struct Reauth {
    sasl: SaslConfig,
    due: Instant,
}

/// The bytes' way to the broker: a TCP stream, or a TLS session over one.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

/// A TLS session ends with close_notify, so the broker sees an orderly
/// close rather than a truncation.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                match s.conn.write_tls(&mut s.sock) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A TCP connection as every client has it: TCP_NODELAY, a 60 s read
/// timeout.
fn tcp(addr: impl ToSocketAddrs) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(stream)
}

/// The host part of `HOST:PORT` (`[::1]:9093` gives `::1`).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// What a fetch of one partition returned.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

/// A Produce of one records field to one partition (30 s timeout).
pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(records);
    let mut td = TopicProduceData::default();
    td.name = topic_name(topic);
    td.partition_data = vec![pd];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 30_000;
    r.topic_data = vec![td];
    r
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Whether decrypted response bytes are waiting (or the session ended),
/// reading TLS records off the socket until `deadline`.
fn tls_readable(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    deadline: Instant,
) -> Result<bool, ClientError> {
    loop {
        let state = s
            .conn
            .process_new_packets()
            .map_err(|e| ClientError::tls(e.to_string()))?;
        if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        s.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match s.conn.read_tls(&mut s.sock) {
            // The broker closed the connection.
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if timed_out(&e) => return Ok(false),
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// A topic name as the protocol types hold it.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Client {
    /// Connects (TCP_NODELAY, a 60 s read timeout).
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Ok(Client::over(Stream::Plain(tcp(addr)?)))
    }

    fn over(stream: Stream) -> Client {
        Client {
            stream,
            correlation: 0,
            client_id: StrBytes::from_static_str("sluice-cli"),
            outstanding: 0,
            reauth: None,
            reauthentications: 0,
        }
    }

    /// Connects to `addr` (`HOST:PORT`) as `security` says: TCP as
    /// [`connect`](Self::connect) does, then for SSL and SASL_SSL a TLS
    /// session (the broker's certificate checked against the CA and, unless
    /// turned off, for the host of `addr` or `security.server_name`; the
    /// client certificate if one is given), then for SASL_PLAINTEXT and
    /// SASL_SSL the SASL exchange. With PLAINTEXT it is `connect`.
    pub fn connect_secure(addr: &str, security: &ClientSecurity) -> Result<Client, ClientError> {
        security.validate()?;
        // Before the socket: settings that do not load fail without a
        // connection attempt.
        let tls = if security.protocol.tls() {
            Some(security.tls_connection(host_of(addr))?)
        } else {
            None
        };
        let mut sock = tcp(addr)?;
        let stream = match tls {
            None => Stream::Plain(sock),
            Some(mut conn) => {
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock).map_err(|e| {
                        let e = io_error(e);
                        match e.tls_failure() {
                            Some(why) => {
                                ClientError::tls(format!("handshake with {addr} failed: {why}"))
                            }
                            None => e,
                        }
                    })?;
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
        };
        let mut client = Client::over(stream);
        if let Some(sasl) = &security.sasl {
            client.login(sasl.clone())?;
        }
        Ok(client)
    }

    /// Authenticates with SASL and, if the broker gave the session a
    /// lifetime, remembers when to do it again (KIP-368). `reauth` is None
    /// meanwhile, so the exchange's own requests do not re-enter here.
    fn login(&mut self, sasl: SaslConfig) -> Result<(), ClientError> {
        self.reauth = None;
        let lifetime = security::authenticate(self, &sasl)?;
        self.reauth = lifetime.map(|lifetime| Reauth {
            sasl,
            due: security::reauthentication_due(Instant::now(), lifetime),
        });
        Ok(())
    }

    /// Logs in again if the session is due for it and nothing is in flight.
    fn reauthenticate_if_due(&mut self) -> Result<(), ClientError> {
        let due = self
            .reauth
            .as_ref()
            .is_some_and(|r| self.outstanding == 0 && Instant::now() >= r.due);
        if !due {
            return Ok(());
        }
        let Some(Reauth { sasl, .. }) = self.reauth.take() else {
            return Ok(());
        };
        self.login(sasl).map_err(|e| match e {
            ClientError::Refused { code, message } => ClientError::Refused {
                code,
                message: format!("re-authenticating (KIP-368): {message}"),
            },
            other => other,
        })?;
        self.reauthentications += 1;
        Ok(())
    }

    /// How many times this connection has re-authenticated (KIP-368).
    pub fn reauthentications(&self) -> u64 {
        self.reauthentications
    }

    /// Whether the connection is wrapped in TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// How long a read may wait for the broker (60 s from `connect`).
    pub fn set_read_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        self.stream.tcp().set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// A second handle on the same connection, so one thread can write
    /// requests while another reads their responses (in order). The clone
    /// starts from the same correlation id as this handle. Not for a TLS
    /// connection: its session state cannot be shared by two handles.
    ///
    /// A split connection does not re-authenticate (KIP-368): the writing
    /// handle cannot know when the reading one has every response, nor read
    /// the broker's SASL answers itself. Neither handle does, from here on;
    /// with a session lifetime the broker closes the connection once it
    /// has passed.
    pub fn try_clone(&mut self) -> Result<Client, ClientError> {
        let Stream::Plain(stream) = &self.stream else {
            return Err(ClientError::tls(
                "a TLS connection cannot be split into a reading and a writing handle \
                 (try_clone): open a second connection instead"
                    .into(),
            ));
        };
        let stream = Stream::Plain(stream.try_clone()?);
        self.reauth = None;
        Ok(Client {
            correlation: self.correlation,
            client_id: self.client_id.clone(),
            ..Client::over(stream)
        })
    }

    /// Encodes and writes one request, re-authenticating first if that is
    /// due; returns its correlation id. `answered`: a response will come
    /// (not so for Produce with acks=0).
    fn write_request<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        answered: bool,
    ) -> Result<i32, ClientError> {
        self.reauthenticate_if_due()?;
        self.correlation += 1;
        let frame =
            wire::encode_request(req, version, self.correlation, Some(self.client_id.clone()))?;
        self.stream.write_all(&frame).map_err(io_error)?;
        self.stream.flush().map_err(io_error)?;
        if answered {
            self.outstanding += 1;
        }
        Ok(self.correlation)
    }

    /// Writes one request without waiting; returns its correlation id, to
    /// read the response with [`Client::read_response`]. The response
    /// counts as outstanding until it is read (re-authentication waits for
    /// that), so a Produce with acks=0, which gets none, goes by
    /// [`send_produce`](Self::send_produce) instead.
    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> Result<i32, ClientError> {
        self.write_request(version, req, true)
    }

    /// Whether the broker has started answering (bytes are waiting, or the
    /// connection closed), waiting up to `timeout`; consumes nothing of the
    /// response. Lets a caller parked on a long-poll give up on it without
    /// reading half a response. Over TLS, records are taken in (and
    /// decrypted) until one carries response bytes.
    pub fn readable_within(&mut self, timeout: Duration) -> Result<bool, ClientError> {
        let deadline = Instant::now() + timeout;
        let previous = self.stream.tcp().read_timeout()?;
        let result = match &mut self.stream {
            Stream::Plain(s) => {
                s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
                match s.peek(&mut [0u8; 1]) {
                    Ok(_) => Ok(true),
                    Err(e) if timed_out(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Stream::Tls(s) => tls_readable(s, deadline),
        };
        self.stream.tcp().set_read_timeout(previous)?;
        result
    }

    /// Sends a request and decodes its response.
    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response, ClientError> {
        let correlation = self.write_request(version, req, true)?;
        self.read_response::<R>(version, correlation)
    }

    /// Reads the response to the request with `correlation` (responses come
    /// in request order, so pipelined requests are read back in turn).
    pub fn read_response<R: Request>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> Result<R::Response, ClientError> {
        let frame =
            wire::read_frame(&mut self.stream, wire::MAX_RESPONSE_BYTES).map_err(|e| match e {
                ClientError::Io(e) => io_error(e),
                other => other,
            })?;
        self.outstanding = self.outstanding.saturating_sub(1);
        wire::decode_response::<R>(frame, version, correlation)
    }

    /// Sends a Produce without waiting; returns its correlation id, to pass to
    /// [`Client::produce_result`] (pipelining: several in flight at once).
    pub fn send_produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<i32, ClientError> {
        let r = produce_request(topic, partition, records, acks);
        self.write_request(9, &r, acks != 0)
    }

    /// The result of a Produce sent with [`Client::send_produce`].
    pub fn produce_result(&mut self, correlation: i32) -> Result<i64, ClientError> {
        let resp = self.read_response::<ProduceRequest>(9, correlation)?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| ClientError::Protocol("empty produce response".into()))?;
        if p.error_code != 0 {
            return Err(ClientError::Kafka(p.error_code));
        }
        Ok(p.base_offset)
    }

    /// Partition count of `topic` (creating it if the broker auto-creates).
    pub fn partitions(&mut self, topic: &str) -> Result<u32, ClientError> {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(topic_name(topic));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        r.allow_auto_topic_creation = true;
        let resp = self.call(9, &r)?;
        let t = resp
            .topics
            .first()
            .ok_or_else(|| ClientError::Protocol("no topic in metadata".into()))?;
        if t.error_code != 0 {
            return Err(ClientError::Kafka(t.error_code));
        }
        Ok(t.partitions.len() as u32)
    }

    /// Produces one records field (whole batches) to a partition; returns the
    /// base offset (−1 with acks=0, which gets no response).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<i64, ClientError> {
        let correlation = self.send_produce(topic, partition, records, acks)?;
        if acks == 0 {
            // No response comes back for acks=0.
            return Ok(-1);
        }
        self.produce_result(correlation)
    }

    /// ListOffsets: −1 latest, −2 earliest, or a timestamp.
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        p.current_leader_epoch = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = (-1).into();
        r.topics = vec![t];
        let resp = self.call(5, &r)?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty list offsets response".into()))?;
        if p.error_code != 0 {
            return Err(ClientError::Kafka(p.error_code));
        }
        Ok(p.offset)
    }

    /// Fetches one partition from `offset`.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Fetched, ClientError> {
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = max_bytes;
        fp.current_leader_epoch = -1;
        fp.log_start_offset = -1;
        let mut ft = FetchTopic::default();
        ft.topic = topic_name(topic);
        ft.partitions = vec![fp];
        let mut r = FetchRequest::default();
        r.replica_id = (-1).into();
        r.max_wait_ms = max_wait_ms;
        r.min_bytes = 1;
        r.max_bytes = max_bytes;
        r.session_epoch = -1;
        r.topics = vec![ft];
        let resp = self.call(12, &r)?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty fetch response".into()))?;
        Ok(Fetched {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records: p.records.clone().unwrap_or_default(),
        })
    }

    /// Creates a topic (CreateTopics v5) with `partitions` partitions and
    /// topic configs (`retention.ms=…`), replicated as the broker's
    /// `default.replication.factor` says.
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        self.create_topic_replicated(topic, partitions, -1, configs)
    }

    /// As [`create_topic`](Self::create_topic), with `replication_factor`
    /// replicas of each partition (−1: the broker's default).
    pub fn create_topic_replicated(
        &mut self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let mut t = CreatableTopic::default();
        t.name = topic_name(topic);
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.value = Some(StrBytes::from_string(v.clone()));
                c
            })
            .collect();
        let mut r = CreateTopicsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 30_000;
        let resp = self.call(5, &r)?;
        match resp.topics.first().map(|t| t.error_code) {
            Some(0) => Ok(()),
            Some(code) => Err(ClientError::Kafka(code)),
            None => Err(ClientError::Protocol("empty CreateTopics response".into())),
        }
    }

    /// Deletes a topic (DeleteTopics v4).
    pub fn delete_topic(&mut self, topic: &str) -> Result<(), ClientError> {
        let mut r = DeleteTopicsRequest::default();
        r.topic_names = vec![topic_name(topic)];
        r.timeout_ms = 30_000;
        let resp = self.call(4, &r)?;
        match resp.responses.first().map(|t| t.error_code) {
            Some(0) => Ok(()),
            Some(code) => Err(ClientError::Kafka(code)),
            None => Err(ClientError::Protocol("empty DeleteTopics response".into())),
        }
    }

    /// Every topic (`names` None) or the named ones, without creating any.
    /// A named topic that does not exist is a `ClientError::Kafka` of its code.
    pub fn describe_topics(
        &mut self,
        names: Option<&[String]>,
    ) -> Result<Vec<TopicInfo>, ClientError> {
        let mut r = MetadataRequest::default();
        r.topics = names.map(|names| {
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(topic_name(n));
                    t
                })
                .collect()
        });
        r.allow_auto_topic_creation = false;
        let resp = self.call(9, &r)?;
        let mut out = Vec::with_capacity(resp.topics.len());
        for t in resp.topics {
            if t.error_code != 0 {
                return Err(ClientError::Kafka(t.error_code));
            }
            let mut partitions: Vec<(i32, i32)> = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            partitions.sort_unstable();
            let mut replicas: Vec<PartitionReplicas> = t
                .partitions
                .iter()
                .map(|p| PartitionReplicas {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                })
                .collect();
            replicas.sort_by_key(|p| p.partition);
            out.push(TopicInfo {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                internal: t.is_internal,
                partitions,
                replicas,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{SaslConfig, SaslMechanism, SecurityProtocol};
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateResponse, SaslHandshakeResponse,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};
    use std::net::TcpListener;

    /// What a scripted broker saw: each request's API and, for Produce,
    /// its acks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Seen {
        Handshake,
        Authenticate,
        Produce(i16),
    }

    fn answer(
        stream: &mut TcpStream,
        key: ApiKey,
        version: i16,
        correlation: i32,
        body: &impl Encodable,
    ) {
        let mut h = ResponseHeader::default();
        h.correlation_id = correlation;
        let mut buf = BytesMut::from(&[0u8; 4][..]);
        h.encode(&mut buf, key.response_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&buf).unwrap();
    }

    /// A broker for one connection, following a script: SASL/PLAIN logins
    /// succeed with a session of `lifetime_ms` (the `refuse_login`th one,
    /// counting from 1, is refused), Produce is answered unless acks=0.
    /// Returns what it saw once the client hangs up.
    fn scripted_broker(
        lifetime_ms: i64,
        refuse_login: usize,
    ) -> (String, std::thread::JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let (mut seen, mut logins, mut offset) = (Vec::new(), 0, 0);
            while let Ok(mut frame) = wire::read_frame(&mut stream, 1 << 20) {
                let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let header =
                    RequestHeader::decode(&mut frame, key.request_header_version(version)).unwrap();
                let correlation = header.correlation_id;
                match key {
                    ApiKey::SaslHandshake => {
                        seen.push(Seen::Handshake);
                        answer(
                            &mut stream,
                            key,
                            version,
                            correlation,
                            &SaslHandshakeResponse::default(),
                        );
                    }
                    ApiKey::SaslAuthenticate => {
                        seen.push(Seen::Authenticate);
                        logins += 1;
                        let mut r = SaslAuthenticateResponse::default();
                        if logins == refuse_login {
                            r.error_code = crate::error::SASL_AUTHENTICATION_FAILED;
                        } else {
                            r.session_lifetime_ms = lifetime_ms;
                        }
                        answer(&mut stream, key, version, correlation, &r);
                    }
                    ApiKey::Produce => {
                        let req = ProduceRequest::decode(&mut frame, version).unwrap();
                        seen.push(Seen::Produce(req.acks));
                        if req.acks != 0 {
                            let mut p = PartitionProduceResponse::default();
                            p.base_offset = offset;
                            offset += 1;
                            let mut t = TopicProduceResponse::default();
                            t.partition_responses = vec![p];
                            let mut r = kafka_protocol::messages::ProduceResponse::default();
                            r.responses = vec![t];
                            answer(&mut stream, key, version, correlation, &r);
                        }
                    }
                    other => panic!("the script has no {other:?}"),
                }
            }
            seen
        });
        (addr, handle)
    }

    fn sasl_plain() -> ClientSecurity {
        ClientSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::Plain,
                username: "alice".into(),
                password: "pw".into(),
            }),
            ..ClientSecurity::plaintext()
        }
    }

    #[test]
    fn reauthentication_waits_for_outstanding_responses_and_comes_before_the_next_request() {
        use Seen::{Authenticate as A, Handshake as H, Produce as P};
        let (addr, broker) = scripted_broker(200, 0);
        let mut c = Client::connect_secure(&addr, &sasl_plain()).unwrap();
        let records = Bytes::from_static(b"r");
        // Two in flight when the re-authentication falls due (at most
        // 95 % of 200 ms): a third is pipelined behind them, not preceded
        // by a login.
        let a = c.send_produce("t", 0, records.clone(), 1).unwrap();
        let b = c.send_produce("t", 0, records.clone(), 1).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let d = c.send_produce("t", 0, records.clone(), 1).unwrap();
        assert_eq!(c.reauthentications(), 0);
        assert_eq!(
            [a, b, d].map(|corr| c.produce_result(corr).unwrap()),
            [0, 1, 2]
        );
        // Nothing outstanding: the next request logs in again first.
        assert_eq!(c.produce("t", 0, records.clone(), 1).unwrap(), 3);
        assert_eq!(c.reauthentications(), 1);
        // acks=0 gets no response, so it leaves nothing outstanding: past
        // the next deadline the login still comes first.
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.produce("t", 0, records.clone(), 0).unwrap(), -1);
        assert_eq!(c.produce("t", 0, records, 0).unwrap(), -1);
        assert_eq!(c.reauthentications(), 2);
        drop(c);
        assert_eq!(
            broker.join().unwrap(),
            [H, A, P(1), P(1), P(1), H, A, P(1), H, A, P(0), P(0)]
        );
    }

    #[test]
    fn no_lifetime_no_reauthentication_and_a_refused_one_is_an_error() {
        use Seen::{Authenticate as A, Handshake as H, Produce as P};
        // Lifetime 0: the session never expires.
        let (addr, broker) = scripted_broker(0, 0);
        let mut c = Client::connect_secure(&addr, &sasl_plain()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.produce("t", 0, Bytes::from_static(b"r"), 1).unwrap();
        drop(c);
        assert_eq!(broker.join().unwrap(), [H, A, P(1)]);

        // The second login is refused: the request is not sent, and the
        // error says what failed.
        let (addr, broker) = scripted_broker(100, 2);
        let mut c = Client::connect_secure(&addr, &sasl_plain()).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        let err = c.produce("t", 0, Bytes::from_static(b"r"), 1).unwrap_err();
        assert!(err.is_authentication_failure(), "{err:?}");
        assert!(err.to_string().contains("re-authenticating"), "{err}");
        drop(c);
        assert_eq!(broker.join().unwrap(), [H, A, H, A]);
    }

    #[test]
    fn reauthentication_falls_due_at_85_to_95_percent_of_the_lifetime() {
        let start = Instant::now();
        let lifetime = Duration::from_secs(100);
        let dues: Vec<Duration> = (0..200)
            .map(|_| security::reauthentication_due(start, lifetime) - start)
            .collect();
        assert!(
            dues.iter()
                .all(|d| (Duration::from_secs(85)..=Duration::from_secs(95)).contains(d)),
            "{dues:?}"
        );
        // Spread out, not one point.
        let (min, max) = (dues.iter().min().unwrap(), dues.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(5), "{min:?}..{max:?}");
    }

    #[test]
    fn the_host_of_an_address_names_the_tls_server() {
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("broker-1.example:9093"), "broker-1.example");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
