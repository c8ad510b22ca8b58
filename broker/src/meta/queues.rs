//! Queue settings in the metadata: their bounds ([`check_settings`]), applied when a
//! `CreateQueue` command is, identically on every replica.

use neo_protocol::api::{
    QUEUE_BACKOFF_STEPS_MAX, QUEUE_DELAY_MS_MAX, QUEUE_MAX_DELIVERIES_MAX, QUEUE_MAX_IN_FLIGHT_MAX,
    QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN, QueueSettings,
};

use super::state::TOPIC_NAME_LEN_MAX;

/// Checks a queue's settings against the documented limits (`docs/queues.md`).
pub fn check_settings(name: &str, s: &QueueSettings) -> Result<(), String> {
    let vis = QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX;
    if !vis.contains(&s.visibility_timeout_ms) {
        return Err(format!(
            "visibility_timeout_ms {} is outside {QUEUE_VISIBILITY_TIMEOUT_MS_MIN}..={QUEUE_VISIBILITY_TIMEOUT_MS_MAX}",
            s.visibility_timeout_ms
        ));
    }
    if !(1..=QUEUE_MAX_DELIVERIES_MAX).contains(&s.max_deliveries) {
        return Err(format!(
            "max_deliveries {} is outside 1..={QUEUE_MAX_DELIVERIES_MAX}",
            s.max_deliveries
        ));
    }
    if !(1..=QUEUE_MAX_IN_FLIGHT_MAX).contains(&s.max_in_flight) {
        return Err(format!(
            "max_in_flight {} is outside 1..={QUEUE_MAX_IN_FLIGHT_MAX}",
            s.max_in_flight
        ));
    }
    if s.max_in_flight_per_consumer > QUEUE_MAX_IN_FLIGHT_MAX {
        return Err(format!(
            "max_in_flight_per_consumer {} is above {QUEUE_MAX_IN_FLIGHT_MAX}",
            s.max_in_flight_per_consumer
        ));
    }
    if s.redelivery_backoff_ms.len() > QUEUE_BACKOFF_STEPS_MAX {
        return Err(format!(
            "{} backoff steps; at most {QUEUE_BACKOFF_STEPS_MAX}",
            s.redelivery_backoff_ms.len()
        ));
    }
    if let Some(d) = s
        .redelivery_backoff_ms
        .iter()
        .find(|d| **d > QUEUE_DELAY_MS_MAX)
    {
        return Err(format!(
            "backoff step {d} ms is above {QUEUE_DELAY_MS_MAX} ms"
        ));
    }
    if let Some(dlq) = &s.dead_letter {
        if dlq.is_empty() || dlq.len() > TOPIC_NAME_LEN_MAX {
            return Err("dead-letter queue name empty or too long".into());
        }
        if dlq == name {
            return Err(format!(
                "queue {name:?} cannot be its own dead-letter queue"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_bounds_are_refused() {
        let ok = QueueSettings::default();
        assert!(check_settings("q", &ok).is_ok());
        let bad = [
            QueueSettings {
                visibility_timeout_ms: 0,
                ..ok.clone()
            },
            QueueSettings {
                max_deliveries: 0,
                ..ok.clone()
            },
            QueueSettings {
                max_in_flight: 0,
                ..ok.clone()
            },
            QueueSettings {
                redelivery_backoff_ms: vec![u32::MAX],
                ..ok.clone()
            },
            QueueSettings {
                dead_letter: Some("q".into()),
                ..ok.clone()
            },
        ];
        for s in bad {
            assert!(check_settings("q", &s).is_err(), "{s:?}");
        }
    }
}
