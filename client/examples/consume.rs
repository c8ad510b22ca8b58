//! Read a topic from the beginning until nothing new arrives for two seconds.
//!
//! ```text
//! cargo run -p neo-client --example consume -- 127.0.0.1:7070 orders
//! ```

use std::time::{Duration, Instant};

use neo_client::{Client, Consumer, Offset};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());

    let client = Client::connect(&[server]).await?;
    let mut consumer = Consumer::new(client);
    consumer.assign_all(&topic, Offset::Beginning).await?;
    let mut last_new = Instant::now();
    while last_new.elapsed() < Duration::from_secs(2) {
        // Long poll: returns as soon as any partition has committed records.
        for record in consumer.poll(Duration::from_millis(500)).await? {
            last_new = Instant::now();
            println!(
                "{}/{} key={:?} value={}",
                record.partition,
                record.offset,
                record.key.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(&record.value)
            );
        }
    }
    Ok(())
}
