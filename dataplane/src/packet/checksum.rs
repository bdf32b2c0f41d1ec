//! The Internet checksum (RFC 1071), fast enough to run over whole super-frames.

/// The Internet checksum of `data`: 0 when `data` already holds a valid one.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// One's-complement sum of `data` as big-endian 16-bit words, plus `initial`, folded to
/// 32 bits (equal to the word-by-word sum once [`fold`]ed).
///
/// The bulk is summed as native-endian 64-bit words in four independent accumulators with
/// end-around carry, then folded and byte-swapped once: one's-complement addition does not
/// depend on byte order (RFC 1071 §2(B)), so this equals the big-endian word sum, at
/// several bytes per cycle instead of two.
pub fn sum_words(data: &[u8], initial: u32) -> u32 {
    const BLOCK: usize = 32;
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(BLOCK);
    for block in &mut blocks {
        for (lane, word) in acc.iter_mut().zip(block.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let (sum, carry) = lane.overflowing_add(u64::from_ne_bytes(bytes));
            // End-around carry: after an overflow `sum` is below u64::MAX, so +1 fits.
            *lane = sum + u64::from(carry);
        }
    }
    let mut total = 0u64;
    for lane in acc {
        let (sum, carry) = total.overflowing_add(lane);
        total = sum + u64::from(carry);
    }
    let native = fold(fold_64(total));
    let bulk = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    // The bulk has an even length, so the rest keeps its big-endian word pairing.
    sum_words_serial(blocks.remainder(), u64::from(initial) + u64::from(bulk))
}

/// Folds a 64-bit one's-complement sum to 32 bits.
fn fold_64(mut sum: u64) -> u32 {
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// [`sum_words`] for short data: big-endian words one by one.
fn sum_words_serial(data: &[u8], initial: u64) -> u32 {
    let mut sum = initial;
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold_64(sum)
}

/// Folds a one's-complement sum to 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for (i, b) in data.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest::proptest! {
        #[test]
        fn checksum_matches_the_rfc1071_definition(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            proptest::prop_assert_eq!(checksum(&data), naive_checksum(&data));
        }

        #[test]
        fn sums_continue_from_any_initial_value(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            initial in proptest::prelude::any::<u32>(),
        ) {
            // The reference: 16-bit big-endian words added to `initial` one at a time.
            let mut reference = u64::from(initial);
            for (i, b) in data.iter().enumerate() {
                reference += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
            }
            while reference >> 16 != 0 {
                reference = (reference & 0xffff) + (reference >> 16);
            }
            proptest::prop_assert_eq!(u64::from(fold(sum_words(&data, initial))), reference);
        }
    }
}
