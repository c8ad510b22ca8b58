//! The soak's fault schedule, pure: which scenario's single cycle runs in which slot.
//!
//! Slot `i` (0-based) begins `fault_every × (i + 1)` after the fault phase started, as
//! long as that is before the phase's end: the first interval is fault-free, and no
//! cycle starts in the last one unless the phase is not a multiple of the interval.
//! The kinds are dealt in rounds: each round is every kind once, in an order shuffled
//! by the seed, and a round never starts with the kind the previous one ended with
//! (when there are two kinds or more). A seed therefore replays the same sequence.

use std::time::Duration;

use crate::faults::Scenario;

/// A PRNG of the soak for `seed`, one independent stream per `stream` name (`run`:
/// the run id; `schedule`: the order; `faults`: the cycles' own choices).
pub fn soak_rng(seed: u64, stream: &str) -> fastrand::Rng {
    // FNV-1a of "soak/<stream>", as `Scenario::rng` does with a scenario's name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "soak/".bytes().chain(stream.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fastrand::Rng::with_seed(seed ^ h)
}

/// Slots of a fault phase of `duration` with one fault every `every`: the `i` with
/// `every × (i + 1) < duration`. Zero when `every` is zero.
pub fn slots(duration: Duration, every: Duration) -> usize {
    if every.is_zero() {
        return 0;
    }
    let mut n = 0usize;
    let mut at = every;
    while at < duration {
        n += 1;
        at += every;
    }
    n
}

/// The start of slot `index`, from the start of the fault phase.
pub fn slot_start(every: Duration, index: usize) -> Duration {
    every.saturating_mul(u32::try_from(index + 1).unwrap_or(u32::MAX))
}

/// The scenario of each of `count` slots: rounds of `kinds` shuffled by `seed` (see the
/// module doc). Empty when `kinds` is.
pub fn schedule(seed: u64, kinds: &[Scenario], count: usize) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Vec::with_capacity(count);
    if kinds.is_empty() {
        return out;
    }
    let mut rng = soak_rng(seed, "schedule");
    while out.len() < count {
        let mut round = kinds.to_vec();
        rng.shuffle(&mut round);
        if round.len() > 1 && out.last() == round.first() {
            let other = rng.usize(1..round.len());
            round.swap(0, other);
        }
        let room = count - out.len();
        out.extend(round.into_iter().take(room));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_after_one_interval_and_end_before_the_phase() {
        let s = Duration::from_secs;
        assert_eq!(slots(s(90), s(30)), 2); // at 30 s and 60 s; 90 s is the end
        assert_eq!(slots(s(100), s(30)), 3); // 30, 60, 90
        assert_eq!(slots(s(7200), s(180)), 39);
        assert_eq!(slots(s(20), s(30)), 0);
        assert_eq!(slots(s(20), Duration::ZERO), 0);
        assert_eq!(slot_start(s(30), 0), s(30));
        assert_eq!(slot_start(s(30), 2), s(90));
    }

    #[test]
    fn a_seed_replays_its_schedule_and_every_round_has_every_kind() {
        let kinds = Scenario::ALL.to_vec();
        let a = schedule(42, &kinds, 40);
        assert_eq!(a, schedule(42, &kinds, 40));
        assert_eq!(a.len(), 40);
        assert_ne!(a, schedule(43, &kinds, 40), "another seed, another order");
        for round in a.chunks(kinds.len()).filter(|r| r.len() == kinds.len()) {
            let mut sorted = round.to_vec();
            sorted.sort_by_key(|k| k.name());
            sorted.dedup();
            assert_eq!(sorted.len(), kinds.len(), "each kind once per round");
        }
        for pair in a.windows(2) {
            assert_ne!(pair[0], pair[1], "never the same kind twice in a row");
        }
        // A prefix of a longer schedule is the shorter one.
        assert_eq!(schedule(42, &kinds, 9), a[..9].to_vec());
    }

    #[test]
    fn one_kind_repeats_and_no_kind_gives_nothing() {
        let one = [Scenario::PauseLeader];
        assert_eq!(schedule(1, &one, 3), vec![Scenario::PauseLeader; 3]);
        assert!(schedule(1, &[], 5).is_empty());
        assert!(schedule(1, &Scenario::ALL, 0).is_empty());
    }

    #[test]
    fn the_streams_of_one_seed_differ() {
        assert_ne!(soak_rng(7, "run").u64(..), soak_rng(7, "faults").u64(..));
        assert_eq!(soak_rng(7, "run").u64(..), soak_rng(7, "run").u64(..));
    }
}
