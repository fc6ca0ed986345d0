//! A small deterministic generator (xorshift64*), so that a randomised test repeats exactly
//! for a given seed. Not for anything but tests.

/// A seeded xorshift64* generator.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; any seed, 0 included, gives a usable (non-zero) state.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}
