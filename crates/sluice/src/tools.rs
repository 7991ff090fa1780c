//! `sluice produce` and `sluice consume`: console tools in the spirit of kcat,
//! so a fresh machine needs nothing else to try a broker.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use sluice_client::{Client, encode_batch, error_name, partition_for_key, plain_record, whole_len};

use crate::client_security::{self, SecurityArgs};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Broker address.
    #[arg(short, long, env = "SLUICE_BROKER", default_value = "127.0.0.1:9092")]
    pub broker: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Topic to write to.
    #[arg(short, long)]
    pub topic: String,
    /// Partition; by default a key's murmur2 hash (as Kafka's Java client) or
    /// round robin per batch for keyless lines.
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(short = 'K', long)]
    pub key_separator: Option<String>,
    /// acks: 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub acks: i16,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(short = 'z', long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_records: usize,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Broker address.
    #[arg(short, long, env = "SLUICE_BROKER", default_value = "127.0.0.1:9092")]
    pub broker: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Topic to read.
    #[arg(short, long)]
    pub topic: String,
    /// Partition; all partitions by default.
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Where to start: beginning, end, or an offset.
    #[arg(short, long, default_value = "beginning")]
    pub offset: String,
    /// Stop after this many messages.
    #[arg(short, long)]
    pub count: Option<u64>,
    /// Exit when every partition is read to its end.
    #[arg(short, long)]
    pub exit: bool,
    /// Output format: %t topic, %p partition, %o offset, %k key, %s value,
    /// %T timestamp, %h headers, \n newline, \t tab.
    #[arg(short, long, default_value = "%s\\n")]
    pub format: String,
}

pub(crate) fn parse_compression(s: &str) -> Result<Compression, String> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return Err(format!("unknown compression {s:?}")),
    })
}

pub fn produce(args: ProduceArgs) -> Result<()> {
    let security = args.security.resolve()?;
    let mut client = client_security::connect(&args.broker, &security)?;
    let partitions = client
        .partitions(&args.topic)
        .context("looking up the topic")? as i32;
    if partitions == 0 {
        bail!("topic {} has no partitions", args.topic);
    }
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut round_robin = 0i32;
    let mut sent = 0u64;
    let flush = |client: &mut Client, partition: i32, records: &mut Vec<Record>| -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        client
            .produce(
                &args.topic,
                partition,
                encode_batch(records, args.compression)?,
                args.acks,
            )
            .with_context(|| format!("producing to {}/{partition}", args.topic))?;
        let n = records.len() as u64;
        records.clear();
        Ok(n)
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                None => (None, Bytes::from(line)),
            },
            None => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => round_robin,
        };
        let batch = pending.entry(partition).or_default();
        batch.push(plain_record(
            batch.len() as i64,
            sluice_log::now_ms(),
            key,
            value,
        ));
        if batch.len() >= args.batch_records.max(1) {
            sent += flush(&mut client, partition, batch)?;
            round_robin = (round_robin + 1) % partitions;
        }
    }
    for (partition, records) in pending.iter_mut() {
        sent += flush(&mut client, *partition, records)?;
    }
    eprintln!("produced {sent} messages to {}", args.topic);
    Ok(())
}

fn render(format: &str, topic: &str, partition: i32, r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = format.chars().peekable();
    let text = |b: &Option<Bytes>| b.clone().unwrap_or_default();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(spec)) => {
                chars.next();
                match spec {
                    't' => out.extend_from_slice(topic.as_bytes()),
                    'p' => out.extend_from_slice(partition.to_string().as_bytes()),
                    'o' => out.extend_from_slice(r.offset.to_string().as_bytes()),
                    'k' => out.extend_from_slice(&text(&r.key)),
                    's' => out.extend_from_slice(&text(&r.value)),
                    'T' => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                    'h' => {
                        let hs: Vec<String> = r
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                format!(
                                    "{}={}",
                                    k.as_str(),
                                    String::from_utf8_lossy(&v.clone().unwrap_or_default())
                                )
                            })
                            .collect();
                        out.extend_from_slice(hs.join(",").as_bytes());
                    }
                    '%' => out.push(b'%'),
                    other => {
                        out.push(b'%');
                        out.extend_from_slice(other.to_string().as_bytes());
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push(b'\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push(b'\t');
            }
            (c, _) => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    out
}

pub fn consume(args: ConsumeArgs) -> Result<()> {
    let security = args.security.resolve()?;
    let mut client = client_security::connect(&args.broker, &security)?;
    let count = client
        .partitions(&args.topic)
        .context("looking up the topic")? as i32;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &partitions {
        let offset = match args.offset.as_str() {
            "beginning" => client.list_offset(&args.topic, p, -2)?,
            "end" => client.list_offset(&args.topic, p, -1)?,
            n => n.parse().with_context(|| format!("offset {n:?}"))?,
        };
        next.insert(p, offset);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
    loop {
        for &p in &partitions {
            let offset = next[&p];
            let wait = if args.exit {
                0
            } else {
                500 / partitions.len().max(1) as i32
            };
            let f = client.fetch(&args.topic, p, offset, wait, 1 << 20)?;
            if f.error_code != 0 {
                bail!(
                    "fetch {}/{p} at {offset}: Kafka error {} ({})",
                    args.topic,
                    f.error_code,
                    error_name(f.error_code)
                );
            }
            // A fetch may end mid-batch: decode the whole batches only.
            let mut records = f.records;
            records.truncate(whole_len(&records));
            let sets = RecordBatchDecoder::decode_all(&mut records)
                .map_err(|e| anyhow::anyhow!("decoding records of {}/{p}: {e}", args.topic))?;
            for set in sets {
                for r in set.records {
                    if r.control || r.offset < offset {
                        continue;
                    }
                    out.write_all(&render(&args.format, &args.topic, p, &r))?;
                    next.insert(p, r.offset + 1);
                    printed += 1;
                    if args.count.is_some_and(|c| printed >= c) {
                        out.flush()?;
                        return Ok(());
                    }
                }
            }
            at_end.insert(p, next[&p] >= f.high_watermark);
        }
        out.flush()?;
        if args.exit && partitions.iter().all(|p| at_end.get(p) == Some(&true)) {
            return Ok(());
        }
    }
}
