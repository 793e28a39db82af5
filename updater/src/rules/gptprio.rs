//! The gptprio boot-selection fields of a GPT entry's attributes, and the choice a gptprio boot loader makes.
//!
//! Layout, as Flatcar's GRUB reads it (flatcar-hub/grub `include/grub/gpt_partition.h`:
//! `GRUB_GPT_PART_ATTR_OFFSET_GPTPRIO_PRIORITY = 48`, `..._TRIES_LEFT = 52`, `..._SUCCESSFUL = 56`,
//! priority and tries 4 bits wide) and as ChromeOS cgpt writes it (`PRIORITY_SHIFT 48`,
//! `TRIES_SHIFT 52`, `SUCCESSFUL_SHIFT 56`): bits 48–51 priority, 52–55 tries left, 56 successful.

use serde::Serialize;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_SHIFT: u32 = 56;
/// Every bit that gptprio owns (48..=56); all others belong to someone else and are kept.
const GPTPRIO_MASK: u64 = 0x1ff << PRIORITY_SHIFT;
const NIBBLE: u64 = 0xf;

/// The gptprio fields of one partition: boot priority, tries left and the successful flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prio {
    /// Boot priority 0–15; 0 means "never boot this slot".
    pub priority: u8,
    /// Boot attempts left 0–15; the boot loader decrements it on each try.
    pub tries: u8,
    /// Set once a boot from this slot was found healthy.
    pub successful: bool,
}

impl Prio {
    /// Read the gptprio fields from a GPT entry's 64-bit attribute field.
    pub fn from_attributes(a: u64) -> Prio {
        // The masks keep each value within 4 bits, so the narrowing casts are lossless.
        Prio {
            priority: ((a >> PRIORITY_SHIFT) & NIBBLE) as u8,
            tries: ((a >> TRIES_SHIFT) & NIBBLE) as u8,
            successful: (a >> SUCCESSFUL_SHIFT) & 1 == 1,
        }
    }

    /// `a` with bits 48..=56 replaced by these fields and every other bit kept; values above 15 saturate at 15.
    pub fn apply(self, a: u64) -> u64 {
        let priority = u64::from(self.priority).min(NIBBLE);
        let tries = u64::from(self.tries).min(NIBBLE);
        (a & !GPTPRIO_MASK)
            | priority << PRIORITY_SHIFT
            | tries << TRIES_SHIFT
            | u64::from(self.successful) << SUCCESSFUL_SHIFT
    }

    /// Whether a gptprio boot loader would consider this slot at all.
    pub fn is_bootable(self) -> bool {
        self.priority > 0 && (self.tries > 0 || self.successful)
    }
}

/// What a gptprio boot loader does: among the given slots, pick the one with the highest priority that has tries > 0 or is successful (ties: the first). Returns its position.
///
/// Mirrors `grub_find_next` in Flatcar's GRUB `grub-core/commands/gptprio.c`: a candidate
/// replaces the current pick only when its priority is strictly higher, starting from 0, so a
/// slot of priority 0 is never chosen and the first of equal priorities wins.
pub fn boot_choice(slots: &[Prio]) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, slot) in slots.iter().enumerate() {
        let floor = best.map_or(0, |(_, p)| p);
        if slot.is_bootable() && slot.priority > floor {
            best = Some((i, slot.priority));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(priority: u8, tries: u8, successful: bool) -> Prio {
        Prio {
            priority,
            tries,
            successful,
        }
    }

    #[test]
    fn gpt_prio_fields_sit_at_bits_48_to_56() {
        // Flatcar's "priority 2, tries 1, not successful" is 0x0012 in the top 16 bits.
        let a = p(2, 1, false).apply(0);
        assert_eq!(a, 0x0012_0000_0000_0000);
        assert_eq!(p(15, 15, true).apply(0), 0x01ff_0000_0000_0000);
        assert_eq!(Prio::from_attributes(0x0112_0000_0000_0000), p(2, 1, true));
    }

    #[test]
    fn gpt_prio_apply_keeps_every_other_bit() {
        let others = !GPTPRIO_MASK;
        let a = p(1, 0, true).apply(u64::MAX);
        assert_eq!(a & others, others);
        assert_eq!(Prio::from_attributes(a), p(1, 0, true));
        assert_eq!(p(0, 0, false).apply(u64::MAX), others);
    }

    #[test]
    fn gpt_prio_apply_saturates_out_of_range_values() {
        assert_eq!(
            Prio::from_attributes(p(200, 16, false).apply(0)),
            p(15, 15, false)
        );
    }

    #[test]
    fn gpt_boot_choice_follows_grub_gptprio() {
        let cases: &[(&[Prio], Option<usize>)] = &[
            // Highest priority wins wherever it stands.
            (&[p(1, 1, false), p(2, 1, false)], Some(1)),
            (&[p(2, 0, true), p(1, 1, false)], Some(0)),
            // Tries 0 and not successful: skipped, even at a higher priority.
            (&[p(1, 0, true), p(2, 0, false)], Some(0)),
            // Successful with tries 0 is still bootable.
            (&[p(0, 0, false), p(1, 0, true)], Some(1)),
            // Equal priorities: the first.
            (&[p(3, 1, false), p(3, 0, true)], Some(0)),
            // Priority 0 is never booted, even when successful.
            (&[p(0, 5, true)], None),
            // Nothing bootable.
            (&[p(1, 0, false), p(2, 0, false)], None),
            (&[], None),
        ];
        for (slots, want) in cases {
            assert_eq!(boot_choice(slots), *want, "slots {slots:?}");
        }
    }
}
