//! Client-side end-to-end encryption on a real `neo-node` (issue 19): a producer with a
//! key ring stores only ciphertext (checked in the records a key-less consumer reads
//! and in every file of the node's data folder); a consumer with the ring reads the
//! plaintext back; a consumer whose ring lacks the key gets a typed error per record
//! (never the ciphertext as a value); plaintext records pass through on the same
//! topic; rotation keeps old records readable; retiring a key shreds its records; a
//! dead-lettered record still decrypts in its new topic; a group member decrypts too.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use neo_client::encryption::{
    CryptoFailure, ENCRYPTION_HEADER, EncryptionError, EncryptionHeader, ORIGIN_TOPIC_HEADER,
    forward,
};
use neo_client::{
    Admin, AeadAlgorithm, AutoOffsetReset, Client, Consumer, ConsumerConfig, ConsumerRecord, Error,
    GroupConsumer, GroupConsumerConfig, Keyring, Offset, Producer, ProducerConfig, ProducerRecord,
    RecordResult, SharedKeyring,
};
use neo_tests::{TestCluster, connect, folder_contains, with_cluster};

/// Bound on every wait for records.
const WAIT_MAX: Duration = Duration::from_secs(30);
const TOPIC: &str = "payments";
const DLQ: &str = "payments.dlq";
/// Records sealed under the first key, then under the second.
const FIRST_KEY_RECORDS: u64 = 20;
const SECOND_KEY_RECORDS: u64 = 5;

/// A value nobody may find outside a consumer holding the key.
fn secret(i: u64) -> String {
    format!("secret-canary-{i:04}: card 4111 1111 1111 1111")
}

/// Marker of the one plaintext record, a positive control for the data-folder scan.
const CLEAR: &str = "clear-canary: not encrypted on purpose";

/// Send `records` and wait for every acknowledgement.
async fn send_all(producer: &Producer, records: Vec<ProducerRecord>) -> anyhow::Result<()> {
    let mut deliveries = Vec::new();
    for record in records {
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    Ok(())
}

fn consumer(client: &Client, ring: Option<SharedKeyring>) -> Consumer {
    Consumer::with_config(
        client.clone(),
        ConsumerConfig {
            encryption: ring,
            ..ConsumerConfig::default()
        },
    )
}

/// `poll_each` from the beginning of `topic` until `count` records came.
async fn read_each(
    client: &Client,
    topic: &str,
    ring: Option<SharedKeyring>,
    count: usize,
) -> anyhow::Result<Vec<RecordResult>> {
    let mut consumer = consumer(client, ring);
    consumer.assign(topic, &[0], Offset::Beginning).await?;
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < count {
        ensure!(
            started.elapsed() < WAIT_MAX,
            "{topic}: {} of {count} records",
            out.len()
        );
        out.extend(consumer.poll_each(Duration::from_millis(200)).await?);
    }
    ensure!(
        out.len() == count,
        "{topic}: {} records, {count} expected",
        out.len()
    );
    Ok(out)
}

/// Every record readable, as plaintext.
fn values(records: Vec<RecordResult>) -> anyhow::Result<Vec<String>> {
    records
        .into_iter()
        .map(|r| {
            let r = r?;
            ensure!(
                !r.headers.iter().any(|(n, _)| n == ENCRYPTION_HEADER),
                "decrypted record still marked encrypted"
            );
            Ok(String::from_utf8(r.value.to_vec())?)
        })
        .collect()
}

fn enc_header(record: &ConsumerRecord) -> anyhow::Result<EncryptionHeader> {
    let (_, value) = record
        .headers
        .iter()
        .find(|(n, _)| n == ENCRYPTION_HEADER)
        .context("no neo-enc header")?;
    Ok(EncryptionHeader::parse(value)?)
}

/// `poll` must answer `Error::Decrypt` for `offset` of the topic's partition 0, k1's.
async fn expect_decrypt_error(consumer: &mut Consumer, offset: u64) -> anyhow::Result<()> {
    match consumer.poll(Duration::from_secs(5)).await {
        Err(Error::Decrypt {
            topic,
            partition: 0,
            offset: at,
            source,
        }) if topic == TOPIC && at == offset && source == unknown("k1") => Ok(()),
        other => bail!("expected k1's record {offset} to be undecryptable, got {other:?}"),
    }
}

/// The expected error of a record sealed under a key the reader lacks.
fn unknown(key_id: &str) -> EncryptionError {
    EncryptionError::Crypto(CryptoFailure::UnknownKey {
        key_id: key_id.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_records_round_trip_and_the_broker_never_sees_plaintext() -> anyhow::Result<()> {
    with_cluster(1, async |cluster: &mut TestCluster| {
        let client = connect(cluster).await?;
        let admin = Admin::new(client.clone());
        admin.create_topic(TOPIC, 1, 1).await?;
        admin.create_topic(DLQ, 1, 1).await?;
        let ring =
            SharedKeyring::with_key("k1", AeadAlgorithm::Aes256Gcm, &Keyring::generate_key()?)?;
        let encrypting = Producer::with_config(
            client.clone(),
            ProducerConfig {
                encryption: Some(ring.clone()),
                ..ProducerConfig::default()
            },
        );
        let records = (0..FIRST_KEY_RECORDS)
            .map(|i| ProducerRecord::new(TOPIC, secret(i)).key(format!("user-{i}")))
            .collect();
        send_all(&encrypting, records).await?;
        // A plaintext record on the same topic, from a producer without a ring.
        let plain = Producer::new(client.clone());
        send_all(&plain, vec![ProducerRecord::new(TOPIC, CLEAR)]).await?;
        let total = FIRST_KEY_RECORDS as usize + 1;

        // 1. With the ring: the plaintext back, in order; the clear record unchanged.
        let mut expected: Vec<String> = (0..FIRST_KEY_RECORDS).map(secret).collect();
        expected.push(CLEAR.to_string());
        let read = values(read_each(&client, TOPIC, Some(ring.clone()), total).await?)?;
        ensure!(read == expected, "decrypted values differ: {read:?}");

        // 2. Without a ring: records as stored. Ciphertext only, key id and algorithm
        //    in the header, the keys in clear.
        for (i, record) in read_each(&client, TOPIC, None, total)
            .await?
            .into_iter()
            .enumerate()
        {
            let record = record?;
            if i == FIRST_KEY_RECORDS as usize {
                ensure!(record.value == CLEAR.as_bytes(), "the clear record");
                continue;
            }
            let header = enc_header(&record)?;
            ensure!((header.algorithm, header.key_id.as_str()) == (AeadAlgorithm::Aes256Gcm, "k1"));
            ensure!(
                record.value.len() == secret(0).len() + 16,
                "ciphertext ‖ tag"
            );
            ensure!(
                !record.value.windows(13).any(|w| w == b"secret-canary"),
                "plaintext on the wire"
            );
            ensure!(record.key.as_deref() == Some(format!("user-{i}").as_bytes()));
        }
        // ... and nowhere on the node's disk, while the clear record is (the control).
        let data_dir = &cluster.spec(1).data_dir;
        ensure!(
            folder_contains(data_dir, CLEAR.as_bytes())?,
            "the scan finds stored values"
        );
        ensure!(
            !folder_contains(data_dir, b"secret-canary")?,
            "plaintext on the broker's disk"
        );

        // 3. A ring without the key: a typed error per record, the clear record read.
        let stranger = SharedKeyring::with_key("other", AeadAlgorithm::Aes256Gcm, &[7; 32])?;
        let each = read_each(&client, TOPIC, Some(stranger.clone()), total).await?;
        for (i, item) in each.iter().enumerate() {
            match item {
                Ok(record) => ensure!(i == total - 1 && record.value == CLEAR.as_bytes()),
                Err(u) => ensure!(
                    u.record.offset == i as u64 && u.error == unknown("k1"),
                    "record {i}: {u}"
                ),
            }
        }
        //    `poll` answers the first one as an error and stays there until skipped.
        let mut lost = consumer(&client, Some(stranger));
        lost.assign(TOPIC, &[0], Offset::Beginning).await?;
        expect_decrypt_error(&mut lost, 0).await?;
        expect_decrypt_error(&mut lost, 0).await?;
        ensure!(
            lost.position(TOPIC, 0) == Some(0),
            "the position stays at the record"
        );
        lost.seek(TOPIC, 0, Offset::At(1));
        expect_decrypt_error(&mut lost, 1).await?;

        // 4. Rotation: new records use k2 (through the same shared ring), k1's still read.
        ring.add_key(
            "k2",
            AeadAlgorithm::ChaCha20Poly1305,
            &Keyring::generate_key()?,
        )?;
        let records = (FIRST_KEY_RECORDS..FIRST_KEY_RECORDS + SECOND_KEY_RECORDS)
            .map(|i| ProducerRecord::new(TOPIC, secret(i)))
            .collect();
        send_all(&encrypting, records).await?;
        let total = total + SECOND_KEY_RECORDS as usize;
        let raw = read_each(&client, TOPIC, None, total).await?;
        let last = raw
            .last()
            .context("records")?
            .as_ref()
            .map_err(Clone::clone)?;
        ensure!(enc_header(last)?.key_id == "k2", "the new key is current");
        expected.extend((FIRST_KEY_RECORDS..FIRST_KEY_RECORDS + SECOND_KEY_RECORDS).map(secret));
        let read = values(read_each(&client, TOPIC, Some(ring.clone()), total).await?)?;
        ensure!(read == expected, "after rotation: {read:?}");

        // 5. A dead-lettered k2 record decrypts in the dead-letter topic.
        send_all(&plain, vec![forward(last, DLQ)]).await?;
        let dead = read_each(&client, DLQ, Some(ring.clone()), 1).await?;
        let dead = dead.into_iter().next().context("one record")??;
        ensure!(
            dead.value == expected[total - 1].as_bytes(),
            "dead-lettered value"
        );
        ensure!(
            dead.headers
                .contains(&(ORIGIN_TOPIC_HEADER.into(), Bytes::from(TOPIC)))
        );

        // 6. Retiring k1 shreds its records (typed errors); k2's and the clear one read.
        ring.retire("k1")?;
        let each = read_each(&client, TOPIC, Some(ring.clone()), total).await?;
        for (i, item) in each.into_iter().enumerate() {
            match (i < FIRST_KEY_RECORDS as usize, item) {
                (true, Err(u)) => ensure!(u.error == unknown("k1"), "record {i}: {u}"),
                (false, Ok(r)) => ensure!(r.value == expected[i].as_bytes(), "record {i}"),
                (_, other) => bail!("record {i}: {other:?}"),
            }
        }

        // 7. A group member decrypts the same way.
        let config = GroupConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            consumer: ConsumerConfig {
                encryption: Some(ring.clone()),
                ..ConsumerConfig::default()
            },
            ..GroupConsumerConfig::default()
        };
        let mut member =
            GroupConsumer::subscribe(client.clone(), "readers", &[TOPIC], config).await?;
        let started = Instant::now();
        let first = loop {
            ensure!(started.elapsed() < WAIT_MAX, "the member got no partition");
            match member.poll(Duration::from_millis(200)).await {
                Ok(records) if records.is_empty() => continue,
                other => break other,
            }
        };
        match first {
            Err(Error::Decrypt {
                offset: 0, source, ..
            }) => ensure!(source == unknown("k1")),
            other => bail!("expected k1's first record to be shredded, got {other:?}"),
        }
        let mut each = Vec::new();
        while each.len() < total {
            ensure!(
                started.elapsed() < WAIT_MAX,
                "member read {} of {total}",
                each.len()
            );
            each.extend(member.poll_each(Duration::from_millis(200)).await?);
        }
        let readable = values(each.split_off(FIRST_KEY_RECORDS as usize))?;
        ensure!(
            readable == expected[FIRST_KEY_RECORDS as usize..],
            "member: {readable:?}"
        );
        ensure!(
            each.iter()
                .all(|r| matches!(r, Err(u) if u.error == unknown("k1")))
        );
        member.close().await?;
        Ok(())
    })
    .await
}
