//! The simulation's random numbers: SplitMix64, seeded, the same on every platform.

/// A seeded generator (SplitMix64: every seed, 0 included, gives a full-period stream).
#[derive(Clone, Debug)]
pub(crate) struct SimRng(u64);

impl SimRng {
    /// Stream `stream` of `seed`: the scheduler and the network draw from streams of their
    /// own, so that a change in one does not reshuffle the other.
    pub(crate) fn new(seed: u64, stream: u64) -> SimRng {
        let mut r = SimRng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`. Draws nothing when `p` is 0 or 1, so that a fault that is
    /// off does not shift the stream.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::SimRng;

    #[test]
    fn streams_repeat_and_differ() {
        let a: Vec<u64> = (0..4).map(|_| SimRng::new(1, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = SimRng::new(1, 0);
        let mut y = SimRng::new(1, 1);
        let mut z = SimRng::new(2, 0);
        let (xs, ys, zs): (Vec<u64>, Vec<u64>, Vec<u64>) = (0..8)
            .map(|_| (x.next_u64(), y.next_u64(), z.next_u64()))
            .fold((vec![], vec![], vec![]), |mut acc, (a, b, c)| {
                acc.0.push(a);
                acc.1.push(b);
                acc.2.push(c);
                acc
            });
        assert_ne!(xs, ys);
        assert_ne!(xs, zs);
        let mut r = SimRng::new(3, 0);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            assert!((2..=5).contains(&r.range(2, 5)));
        }
    }
}
