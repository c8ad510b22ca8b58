//! Produce a few keyed records and print where each landed.
//!
//! ```text
//! cargo run -p neo-client --example produce -- 127.0.0.1:7070 orders
//! ```

use neo_client::{Admin, Client, Producer, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());

    let client = Client::connect(&[server]).await?;
    if !Admin::new(client.clone())
        .list_topics()
        .await?
        .contains(&topic)
    {
        Admin::new(client.clone())
            .create_topic(&topic, 3, 1)
            .await?;
    }
    let producer = Producer::new(client);
    // Sends are batched per partition; each Delivery resolves after commit.
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new(topic.clone(), format!("order {i}"))
            .key(format!("customer-{}", i % 3))
            .header("source", "example");
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await;
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let meta = delivery.await?;
        println!(
            "order {i} -> partition {} offset {:?}",
            meta.partition, meta.offset
        );
    }
    Ok(())
}
