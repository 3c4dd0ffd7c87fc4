//! The path model: what one direction of an emulated path does to each
//! packet. Plain code: time comes in as an argument and randomness from a
//! seed, so the same seed gives the same pattern and tests need no sockets.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::time::{Duration, Instant};

/// Delay variation added to the fixed delay of each packet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// No variation.
    #[default]
    None,
    /// Uniform in `[-half_width, +half_width]` around the delay (as netem's
    /// `delay D J`), clipped so a packet never arrives before it was sent.
    Uniform {
        /// Half the width of the interval.
        half_width: Duration,
    },
    /// Normal with this standard deviation around the delay, clipped at zero delay.
    Normal {
        /// Standard deviation.
        sd: Duration,
    },
}

/// Which packets are lost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// None.
    #[default]
    None,
    /// Each packet independently with probability `p`.
    Bernoulli {
        /// Loss probability, 0..=1.
        p: f64,
    },
    /// Gilbert–Elliott: a good and a bad state, each with its own loss
    /// probability, switching after each packet with the given probabilities.
    GilbertElliott {
        /// Probability of moving from good to bad after a packet.
        p_good_to_bad: f64,
        /// Probability of moving from bad to good after a packet.
        p_bad_to_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Long-run loss rate.
    pub fn mean_rate(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Bernoulli { p } => p,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let bad = p_good_to_bad / (p_good_to_bad + p_bad_to_good).max(f64::MIN_POSITIVE);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// One direction of a path.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionSpec {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Variation around it.
    pub jitter: Jitter,
    /// Let jitter reorder packets (off: a packet never overtakes an earlier one).
    pub reorder: bool,
    /// Packet loss (datagram relays only; a byte stream does not lose).
    pub loss: Loss,
    /// Bottleneck rate in bits per second; `None` for no cap.
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops (datagrams) or
    /// stops reading (streams).
    pub queue_bytes: usize,
    /// Largest datagram carried; larger ones are dropped.
    pub mtu: Option<usize>,
}

impl Default for DirectionSpec {
    fn default() -> Self {
        DirectionSpec {
            delay: Duration::ZERO,
            jitter: Jitter::None,
            reorder: false,
            loss: Loss::None,
            rate_bps: None,
            queue_bytes: 256 * 1024,
            mtu: None,
        }
    }
}

impl DirectionSpec {
    /// This leg followed by `next` as one direction: delays add, loss
    /// probabilities combine (a packet must survive both), the slower
    /// rate is the bottleneck with its queue, the smaller MTU holds.
    /// Jitter: two uniform spreads add their half-widths; otherwise a
    /// normal with the two variances summed (a uniform of half-width h
    /// has variance h²/3). So a probe's access network (wifi, 4G) and a
    /// country's path to a data centre make one emulated path.
    pub fn then(&self, next: &DirectionSpec) -> DirectionSpec {
        let (bottleneck, other) = match (self.rate_bps, next.rate_bps) {
            (Some(a), Some(b)) if b < a => (next, self),
            (None, Some(_)) => (next, self),
            _ => (self, next),
        };
        DirectionSpec {
            delay: self.delay + next.delay,
            jitter: self.jitter.plus(&next.jitter),
            reorder: self.reorder || next.reorder,
            loss: self.loss.plus(&next.loss),
            rate_bps: bottleneck.rate_bps.or(other.rate_bps),
            queue_bytes: bottleneck.queue_bytes,
            mtu: match (self.mtu, next.mtu) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

impl DirectionSpec {
    /// This direction cut at `shares` of its delay (each in 0..1, rising,
    /// measured from the probe's end) into `shares.len() + 1` segments,
    /// in order from the probe's end. The segment where the direction
    /// starts (the first going up, `impaired_last` for going down) carries
    /// every impairment (jitter, loss, the bottleneck and its queue, the
    /// MTU) with its part of the delay; the others only their part of the
    /// delay. So routers along a path see a packet at their share of its
    /// delay, the path end to end is what it was, and a packet's fate is
    /// decided when it enters the path.
    pub fn split(&self, shares: &[f64], impaired_last: bool) -> Vec<DirectionSpec> {
        let total = self.delay.as_secs_f64();
        let mut cuts: Vec<f64> = shares.iter().map(|s| s.clamp(0.0, 1.0)).collect();
        cuts.push(1.0);
        let impaired = if impaired_last { cuts.len() - 1 } else { 0 };
        let mut out = Vec::with_capacity(cuts.len());
        let mut from = 0.0;
        for (i, to) in cuts.into_iter().enumerate() {
            let delay = Duration::from_secs_f64((to - from).max(0.0) * total);
            out.push(if i == impaired {
                DirectionSpec {
                    delay,
                    ..self.clone()
                }
            } else {
                DirectionSpec {
                    delay,
                    ..DirectionSpec::default()
                }
            });
            from = to;
        }
        out
    }
}

impl Jitter {
    fn variance_s2(&self) -> f64 {
        match *self {
            Jitter::None => 0.0,
            Jitter::Uniform { half_width } => half_width.as_secs_f64().powi(2) / 3.0,
            Jitter::Normal { sd } => sd.as_secs_f64().powi(2),
        }
    }

    /// The jitter of two legs in a row (see [`DirectionSpec::then`]).
    fn plus(&self, next: &Jitter) -> Jitter {
        match (*self, *next) {
            (Jitter::None, j) | (j, Jitter::None) => j,
            (Jitter::Uniform { half_width: a }, Jitter::Uniform { half_width: b }) => {
                Jitter::Uniform { half_width: a + b }
            }
            (a, b) => Jitter::Normal {
                sd: Duration::from_secs_f64((a.variance_s2() + b.variance_s2()).sqrt()),
            },
        }
    }
}

impl Loss {
    /// The loss of two legs in a row: a packet must survive both. A
    /// bursty leg keeps its states, each with the other leg's loss added;
    /// two bursty legs are not combined exactly (the second counts at its
    /// mean rate).
    fn plus(&self, next: &Loss) -> Loss {
        let both = |a: f64, b: f64| 1.0 - (1.0 - a) * (1.0 - b);
        match (*self, *next) {
            (Loss::None, l) | (l, Loss::None) => l,
            (Loss::Bernoulli { p }, Loss::Bernoulli { p: q }) => Loss::Bernoulli { p: both(p, q) },
            (
                Loss::GilbertElliott {
                    p_good_to_bad,
                    p_bad_to_good,
                    loss_good,
                    loss_bad,
                },
                other,
            )
            | (
                other,
                Loss::GilbertElliott {
                    p_good_to_bad,
                    p_bad_to_good,
                    loss_good,
                    loss_bad,
                },
            ) => {
                let q = other.mean_rate();
                Loss::GilbertElliott {
                    p_good_to_bad,
                    p_bad_to_good,
                    loss_good: both(loss_good, q),
                    loss_bad: both(loss_bad, q),
                }
            }
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Random loss.
    Lost,
    /// The bottleneck queue was full.
    QueueFull,
    /// Larger than the path MTU.
    TooBig,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered at this instant.
    Deliver(Instant),
    /// Dropped.
    Drop(Drop),
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    /// Packets (or stream chunks) offered.
    pub offered: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped at a full queue.
    pub queue_drops: u64,
    /// Dropped for size.
    pub too_big: u64,
    /// Bytes delivered.
    pub bytes: u64,
}

/// The state of one direction: its bottleneck, its loss state, its random stream.
#[derive(Debug)]
pub struct Direction {
    spec: DirectionSpec,
    rng: StdRng,
    bad_state: bool,
    link_free_at: Option<Instant>,
    last_delivery: Option<Instant>,
    counters: DirectionCounters,
}

impl Direction {
    /// A direction following `spec`, its randomness seeded by `seed`.
    pub fn new(spec: DirectionSpec, seed: u64) -> Self {
        Direction {
            spec,
            rng: StdRng::seed_from_u64(seed),
            bad_state: false,
            link_free_at: None,
            last_delivery: None,
            counters: DirectionCounters::default(),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &DirectionSpec {
        &self.spec
    }

    /// Counters so far.
    pub fn counters(&self) -> DirectionCounters {
        self.counters
    }

    fn lose(&mut self) -> bool {
        match self.spec.loss {
            Loss::None => false,
            Loss::Bernoulli { p } => self.rng.gen::<f64>() < p,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let p = if self.bad_state { loss_bad } else { loss_good };
                let lost = self.rng.gen::<f64>() < p;
                let switch = if self.bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if self.rng.gen::<f64>() < switch {
                    self.bad_state = !self.bad_state;
                }
                lost
            }
        }
    }

    fn delay_sample(&mut self) -> Duration {
        let d = self.spec.delay.as_secs_f64();
        let v = match self.spec.jitter {
            Jitter::None => d,
            Jitter::Uniform { half_width } => {
                let h = half_width.as_secs_f64();
                d + self.rng.gen_range(-h..=h)
            }
            Jitter::Normal { sd } => match Normal::new(d, sd.as_secs_f64()) {
                Ok(n) => n.sample(&mut self.rng),
                Err(_) => d,
            },
        };
        Duration::from_secs_f64(v.max(0.0))
    }

    /// Time the bottleneck needs to send `bytes`.
    fn serialization(&self, bytes: usize) -> Duration {
        match self.spec.rate_bps {
            Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64),
            _ => Duration::ZERO,
        }
    }

    /// Bytes waiting in the bottleneck queue at `now`.
    pub fn backlog_bytes(&self, now: Instant) -> usize {
        match (self.spec.rate_bps, self.link_free_at) {
            (Some(rate), Some(free)) if free > now => {
                ((free - now).as_secs_f64() * rate as f64 / 8.0) as usize
            }
            _ => 0,
        }
    }

    /// When the queue will have drained to `bytes` or fewer (for a stream
    /// relay that must wait instead of dropping).
    pub fn room_at(&self, now: Instant, bytes: usize) -> Instant {
        let excess = (self.backlog_bytes(now) + bytes).saturating_sub(self.spec.queue_bytes);
        now + self.serialization(excess)
    }

    /// Decides the fate of a datagram of `size` bytes arriving at `now`.
    pub fn handle_datagram(&mut self, now: Instant, size: usize) -> Verdict {
        self.counters.offered += 1;
        if self.spec.mtu.is_some_and(|mtu| size > mtu) {
            self.counters.too_big += 1;
            return Verdict::Drop(Drop::TooBig);
        }
        if self.spec.rate_bps.is_some() && self.backlog_bytes(now) + size > self.spec.queue_bytes {
            self.counters.queue_drops += 1;
            return Verdict::Drop(Drop::QueueFull);
        }
        // Loss is decided before the queue so a lost packet uses no capacity.
        if self.lose() {
            self.counters.lost += 1;
            return Verdict::Drop(Drop::Lost);
        }
        Verdict::Deliver(self.schedule_counted(now, size))
    }

    /// When a chunk of a byte stream arriving at `now` is delivered: no
    /// loss and no reordering, whatever the spec says.
    pub fn handle_stream(&mut self, now: Instant, size: usize) -> Instant {
        self.counters.offered += 1;
        let at = self.schedule_counted(now, size);
        at.max(self.last_delivery.unwrap_or(at))
    }

    /// When the end of a byte stream, seen at `now`, is delivered: one
    /// delay later and after all its data, as a FIN crosses a path. It
    /// carries no bytes and is not counted as a chunk.
    pub fn handle_stream_end(&mut self, now: Instant) -> Instant {
        let at = self.schedule(now, 0);
        at.max(self.last_delivery.unwrap_or(at))
    }

    fn schedule_counted(&mut self, now: Instant, size: usize) -> Instant {
        self.counters.delivered += 1;
        self.counters.bytes += size as u64;
        self.schedule(now, size)
    }

    fn schedule(&mut self, now: Instant, size: usize) -> Instant {
        let start = self.link_free_at.map_or(now, |f| f.max(now));
        let sent = start + self.serialization(size);
        if self.spec.rate_bps.is_some() {
            self.link_free_at = Some(sent);
        }
        let mut at = sent + self.delay_sample();
        if !self.spec.reorder {
            if let Some(last) = self.last_delivery {
                at = at.max(last);
            }
        }
        self.last_delivery = Some(self.last_delivery.map_or(at, |l| l.max(at)));
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direction_split_at_its_hops_keeps_its_delay_and_puts_impairments_first() {
        let d = DirectionSpec {
            delay: Duration::from_millis(100),
            loss: Loss::Bernoulli { p: 0.01 },
            rate_bps: Some(8_000_000),
            queue_bytes: 64_000,
            ..DirectionSpec::default()
        };
        let parts = d.split(&[0.2, 0.7], false);
        let delays: Vec<u128> = parts.iter().map(|p| p.delay.as_millis()).collect();
        assert_eq!(delays, [20, 50, 30]);
        assert_eq!(parts[0].loss, d.loss);
        assert_eq!(parts[0].rate_bps, d.rate_bps);
        for p in &parts[1..] {
            assert_eq!((p.loss, p.rate_bps), (Loss::None, None));
        }
        // Going down, the path starts at the far end.
        let down = d.split(&[0.2, 0.7], true);
        let delays: Vec<u128> = down.iter().map(|p| p.delay.as_millis()).collect();
        assert_eq!(delays, [20, 50, 30]);
        assert_eq!(down[2].rate_bps, d.rate_bps);
        assert!(down[..2]
            .iter()
            .all(|p| p.rate_bps.is_none() && p.loss == Loss::None));
        assert_eq!(d.split(&[], false), vec![d.clone()]);
    }

    #[test]
    fn two_legs_make_one_direction() {
        let access = DirectionSpec {
            delay: Duration::from_millis(20),
            jitter: Jitter::Uniform {
                half_width: Duration::from_millis(4),
            },
            loss: Loss::Bernoulli { p: 0.01 },
            rate_bps: Some(10_000_000),
            queue_bytes: 100_000,
            ..DirectionSpec::default()
        };
        let backbone = DirectionSpec {
            delay: Duration::from_millis(60),
            jitter: Jitter::Uniform {
                half_width: Duration::from_millis(2),
            },
            loss: Loss::Bernoulli { p: 0.005 },
            rate_bps: Some(8_000_000),
            queue_bytes: 64_000,
            mtu: Some(1400),
            ..DirectionSpec::default()
        };
        let path = access.then(&backbone);
        assert_eq!(path.delay, Duration::from_millis(80));
        assert_eq!(
            path.jitter,
            Jitter::Uniform {
                half_width: Duration::from_millis(6)
            }
        );
        let Loss::Bernoulli { p } = path.loss else {
            panic!("{:?}", path.loss)
        };
        assert!((p - (1.0 - 0.99 * 0.995)).abs() < 1e-12);
        // The slower leg is the bottleneck, with its own queue.
        assert_eq!((path.rate_bps, path.queue_bytes), (Some(8_000_000), 64_000));
        assert_eq!(path.mtu, Some(1400));
        // Normal and uniform jitter add their variances.
        let normal = DirectionSpec {
            jitter: Jitter::Normal {
                sd: Duration::from_millis(3),
            },
            ..DirectionSpec::default()
        };
        let Jitter::Normal { sd } = normal.then(&access).jitter else {
            panic!()
        };
        let want = (9.0f64 + 16.0 / 3.0).sqrt();
        assert!((sd.as_secs_f64() * 1e3 - want).abs() < 1e-6, "{sd:?}");
        // A leg with nothing in it changes nothing.
        assert_eq!(DirectionSpec::default().then(&backbone), backbone);
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn fixed_delay_delivers_exactly() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            DirectionSpec {
                delay: ms(40),
                ..Default::default()
            },
            1,
        );
        assert_eq!(d.handle_datagram(t0, 100), Verdict::Deliver(t0 + ms(40)));
        assert_eq!(
            d.handle_datagram(t0 + ms(1), 100),
            Verdict::Deliver(t0 + ms(41))
        );
    }

    #[test]
    fn a_stream_ends_one_delay_after_it_is_closed_behind_its_data() {
        let t0 = Instant::now();
        let mut d = Direction::new(
            DirectionSpec {
                delay: ms(20),
                rate_bps: Some(8_000_000), // 1 byte a µs
                queue_bytes: 1 << 20,
                ..Default::default()
            },
            1,
        );
        let data = d.handle_stream(t0, 50_000);
        assert_eq!(data, t0 + ms(50) + ms(20));
        // Closed at once: the end queues behind the 50 ms of data.
        assert_eq!(d.handle_stream_end(t0 + ms(1)), t0 + ms(70));
        // Closed after an idle second: one delay after the close, not at
        // the last chunk's instant.
        let mut idle = Direction::new(
            DirectionSpec {
                delay: ms(20),
                ..Default::default()
            },
            1,
        );
        idle.handle_stream(t0, 100);
        assert_eq!(idle.handle_stream_end(t0 + ms(1_000)), t0 + ms(1_020));
        let c = idle.counters();
        assert_eq!(
            (c.offered, c.delivered, c.bytes),
            (1, 1, 100),
            "the end is no chunk"
        );
    }

    #[test]
    fn same_seed_same_pattern() {
        let spec = DirectionSpec {
            delay: ms(10),
            jitter: Jitter::Uniform { half_width: ms(5) },
            loss: Loss::Bernoulli { p: 0.2 },
            ..Default::default()
        };
        let t0 = Instant::now();
        let run = |seed| {
            let mut d = Direction::new(spec.clone(), seed);
            (0..200)
                .map(|i| d.handle_datagram(t0 + ms(20 * i), 64))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn bernoulli_loss_rate() {
        let mut d = Direction::new(
            DirectionSpec {
                loss: Loss::Bernoulli { p: 0.05 },
                ..Default::default()
            },
            3,
        );
        let t0 = Instant::now();
        let n = 100_000;
        for i in 0..n {
            d.handle_datagram(t0 + Duration::from_micros(i), 64);
        }
        let rate = d.counters().lost as f64 / n as f64;
        // sd = sqrt(.05 * .95 / 1e5) = 0.00069; 4 sd.
        assert!((rate - 0.05).abs() < 0.0028, "{rate}");
    }

    #[test]
    fn gilbert_elliott_losses_come_in_bursts() {
        let loss = Loss::GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.2,
            loss_good: 0.0,
            loss_bad: 0.8,
        };
        let mut d = Direction::new(
            DirectionSpec {
                loss,
                ..Default::default()
            },
            11,
        );
        let t0 = Instant::now();
        let lost: Vec<bool> = (0..200_000u64)
            .map(|i| {
                matches!(
                    d.handle_datagram(t0 + Duration::from_micros(i), 64),
                    Verdict::Drop(_)
                )
            })
            .collect();
        let rate = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
        assert!(
            (rate - loss.mean_rate()).abs() < 0.005,
            "{rate} vs {}",
            loss.mean_rate()
        );
        // Burstiness: a loss is far more likely right after a loss.
        let after_loss = lost.windows(2).filter(|w| w[0]).count() as f64;
        let both = lost.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        assert!(
            both / after_loss > 3.0 * rate,
            "P(loss | loss) {} vs {rate}",
            both / after_loss
        );
    }

    #[test]
    fn no_reordering_unless_asked() {
        let spec = DirectionSpec {
            delay: ms(50),
            jitter: Jitter::Uniform { half_width: ms(20) },
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut d = Direction::new(spec.clone(), 5);
        let mut last = t0;
        for i in 0..1000 {
            let Verdict::Deliver(at) = d.handle_datagram(t0 + ms(i), 64) else {
                panic!()
            };
            assert!(at >= last);
            last = at;
        }
        let mut r = Direction::new(
            DirectionSpec {
                reorder: true,
                ..spec
            },
            5,
        );
        let times: Vec<Instant> = (0..1000)
            .map(|i| match r.handle_datagram(t0 + ms(i), 64) {
                Verdict::Deliver(at) => at,
                v => panic!("{v:?}"),
            })
            .collect();
        assert!(
            times.windows(2).any(|w| w[1] < w[0]),
            "reordering allowed but none happened"
        );
    }

    #[test]
    fn bandwidth_paces_and_tail_drops() {
        // 8 Mbit/s = 1 byte per µs; 10 000-byte queue.
        let spec = DirectionSpec {
            rate_bps: Some(8_000_000),
            queue_bytes: 10_000,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut d = Direction::new(spec, 1);
        // A burst of 20 packets of 1000 bytes at once: 10 fit, the rest drop.
        let verdicts: Vec<_> = (0..20).map(|_| d.handle_datagram(t0, 1000)).collect();
        let delivered: Vec<Instant> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Deliver(at) => Some(*at),
                _ => None,
            })
            .collect();
        assert_eq!(delivered.len(), 10);
        assert_eq!(d.counters().queue_drops, 10);
        // Each leaves 1 ms after the previous.
        for (i, at) in delivered.iter().enumerate() {
            assert_eq!(*at, t0 + ms(i as u64 + 1));
        }
        assert_eq!(d.backlog_bytes(t0), 10_000);
        assert_eq!(d.room_at(t0, 1000), t0 + ms(1));
    }

    #[test]
    fn mtu_drops_big_datagrams() {
        let mut d = Direction::new(
            DirectionSpec {
                mtu: Some(1200),
                ..Default::default()
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(d.handle_datagram(t0, 1201), Verdict::Drop(Drop::TooBig));
        assert!(matches!(d.handle_datagram(t0, 1200), Verdict::Deliver(_)));
    }
}
