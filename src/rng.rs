//! A small seeded random number generator whose stream is fixed by this file: the same
//! seed gives the same fleet on every machine and with every dependency version
//! (`rand`'s `StdRng` promises no such thing). xoshiro256** seeded through SplitMix64,
//! integer arithmetic only: no floating point, whose last bits may differ by platform.
//!
//! It sits at the bottom of the crate, importing nothing of it: the synthetic fleet
//! draws its machines from it, the emulator its faults, and the ingester the jitter of
//! its backoff (seeded from the clock there), none through another.

/// The generator. Cheap to create: derive one per (purpose, machine, day).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed` and a path of tags, e.g. `[PURPOSE, machine, day]`:
    /// streams for different paths are independent.
    pub fn derive(seed: u64, path: &[u64]) -> Self {
        let mut x = seed;
        for tag in path {
            let mixed = splitmix(&mut x);
            x = mixed ^ tag.wrapping_mul(0xD605_BBB5_8C8A_BD13);
        }
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix(&mut x);
        }
        Rng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `ppm` in a million.
    pub fn chance(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One element of `(weight, item)` pairs, chosen by weight.
    pub fn weighted<'a, T>(&mut self, items: &'a [(u64, T)]) -> &'a T {
        let total: u64 = items.iter().map(|(w, _)| w).sum();
        let mut x = self.below(total);
        for (w, item) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        &items[items.len() - 1].1
    }

    /// `n` lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..n)
            .map(|_| DIGITS[self.below(16) as usize] as char)
            .collect()
    }

    /// A GUID in its usual lowercase text form.
    pub fn guid(&mut self) -> String {
        format!(
            "{}-{}-4{}-{}{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            ["8", "9", "a", "b"][self.below(4) as usize],
            self.hex(3),
            self.hex(12)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_fixed() {
        // Pinned values: if these change, every generated lake changes.
        let mut r = Rng::derive(42, &[1, 2]);
        let first: Vec<u64> = (0..3).map(|_| r.below(1000)).collect();
        let mut again = Rng::derive(42, &[1, 2]);
        let second: Vec<u64> = (0..3).map(|_| again.below(1000)).collect();
        assert_eq!(first, second);
        assert_eq!(first, vec![299, 98, 243]);
        assert_eq!(Rng::derive(42, &[]).next_u64(), 1_546_998_764_402_558_742);
        assert_ne!(
            Rng::derive(42, &[1, 2]).next_u64(),
            Rng::derive(42, &[1, 3]).next_u64()
        );
        assert_eq!(Rng::derive(7, &[]).hex(40).len(), 40);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::derive(1, &[]);
        for n in [1u64, 2, 7, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
