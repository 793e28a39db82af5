//! The GPT reader and attribute writer (`host::gpt`, through its in-memory [`Image`]) over
//! arbitrary disk images of 512- and 4096-byte sectors: a table either reads or is refused with
//! an error naming the disk; what reads lies inside the disk; a write changes no partition's
//! bytes, reads back, and leaves both copies whole.
//!
//! An input is `[flags][sectors: u16 LE][head length: u16 LE][head][tail]`, laid out as a disk
//! so that small inputs reach deep: the disk is `sectors` zero sectors, `head` is copied at
//! LBA 1 (primary header, then its entry array), the backup copy is made from the primary when
//! asked, and `tail` is XORed onto the end of the disk (a whole backup copy onto zeros, or a few
//! changed bytes of a mirrored one: a torn pair). Then the CRCs are fixed up when asked, so the
//! fuzzer explores the fields behind the CRC checks rather than the checks alone.
//!
//! Flags: bit 0, 4096-byte sectors (else 512); bit 1, fix the CRCs of the header at LBA 1;
//! bit 2, fix the CRCs of the headers at the last LBA and at the primary's alternate LBA;
//! bit 3, mirror the primary to its alternate LBA (array just before it) before the tail;
//! bits 4–7, which partition entry the write changes (1–16).

use upd::host::gpt::{Image, Table};

/// The largest disk built (a few copies per input): 128 sectors of 512 bytes (room for a
/// 128-entry table), 16 of 4096.
const MAX_BYTES: usize = 64 << 10;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The header at `lba` (its size as declared, if sane) and its entry array's byte range, if
/// both lie inside `disk`.
fn header_and_array(
    disk: &[u8],
    sector: usize,
    lba: u64,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let at = usize::try_from(lba).ok()?.checked_mul(sector)?;
    let header = disk.get(at..at.checked_add(sector)?)?;
    let size = le32(header, 12)? as usize;
    if !(92..=sector).contains(&size) {
        return None;
    }
    let array_at = usize::try_from(le64(header, 72)?)
        .ok()?
        .checked_mul(sector)?;
    let array_len = (le32(header, 80)? as usize).checked_mul(le32(header, 84)? as usize)?;
    let array_end = array_at.checked_add(array_len)?;
    (array_end <= disk.len() && array_len <= 16 << 20)
        .then_some((at..at + size, array_at..array_end))
}

/// Recompute the entry array CRC, then the header CRC, of the header at `lba`.
fn fix_crcs(disk: &mut [u8], sector: usize, lba: u64) {
    let Some((header, array)) = header_and_array(disk, sector, lba) else {
        return;
    };
    let array_crc = crc32fast::hash(&disk[array]);
    disk[header.start + 88..header.start + 92].copy_from_slice(&array_crc.to_le_bytes());
    disk[header.start + 16..header.start + 20].fill(0);
    let crc = crc32fast::hash(&disk[header.clone()]);
    disk[header.start + 16..header.start + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Copy the primary header and array to the primary's alternate LBA, as sgdisk lays out a backup.
fn mirror(disk: &mut [u8], sector: usize) {
    let Some((header, array)) = header_and_array(disk, sector, 1) else {
        return;
    };
    let Some(alternate) = le64(&disk[header.clone()], 32) else {
        return;
    };
    let placed = (|| {
        let at = usize::try_from(alternate).ok()?.checked_mul(sector)?;
        let array_at = at.checked_sub(array.len().div_ceil(sector) * sector)?;
        (at.checked_add(sector)? <= disk.len() && at > header.start).then_some((at, array_at))
    })();
    let Some((at, array_at)) = placed else {
        return;
    };
    let (h, a) = (disk[header].to_vec(), disk[array].to_vec());
    disk[array_at..array_at + a.len()].copy_from_slice(&a);
    disk[at..at + h.len()].copy_from_slice(&h);
    disk[at + 24..at + 32].copy_from_slice(&alternate.to_le_bytes());
    disk[at + 32..at + 40].copy_from_slice(&1u64.to_le_bytes());
    disk[at + 72..at + 80].copy_from_slice(&((array_at / sector) as u64).to_le_bytes());
}

/// The disk image an input describes (see the module documentation).
pub fn image(data: &[u8]) -> Option<Image> {
    let (&flags, rest) = data.split_first()?;
    let sectors = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
    let head_len = usize::from(u16::from_le_bytes(rest.get(2..4)?.try_into().ok()?));
    let rest = &rest[4..];
    let (head, tail) = rest.split_at(head_len.min(rest.len()));
    let sector = if flags & 1 == 1 { 4096 } else { 512 };
    let mut disk = vec![0u8; sectors.min(MAX_BYTES / sector) * sector];
    if disk.len() > sector {
        let n = head.len().min(disk.len() - sector);
        disk[sector..sector + n].copy_from_slice(&head[..n]);
    }
    if flags & 8 != 0 {
        mirror(&mut disk, sector);
    }
    let tail = &tail[tail.len().saturating_sub(disk.len())..];
    let start = disk.len() - tail.len();
    for (d, t) in disk[start..].iter_mut().zip(tail) {
        *d ^= t;
    }
    if flags & 4 != 0 {
        let last = (disk.len() / sector).saturating_sub(1) as u64;
        let alternate = header_and_array(&disk, sector, 1)
            .and_then(|(h, _)| le64(&disk[h], 32))
            .filter(|&a| a != 1 && a != last);
        fix_crcs(&mut disk, sector, last);
        if let Some(a) = alternate {
            fix_crcs(&mut disk, sector, a);
        }
    }
    if flags & 2 != 0 {
        fix_crcs(&mut disk, sector, 1);
    }
    Some(Image {
        bytes: disk,
        sector: sector as u64,
    })
}

/// Every partition lies inside the disk, after the primary GPT, with a non-empty byte range.
fn assert_inside(table: &Table, len: u64) -> Vec<std::ops::Range<u64>> {
    let sector = table.sector_size;
    table
        .partitions
        .iter()
        .map(|p| {
            let offset = p
                .offset(sector)
                .expect("a read partition's offset fits in u64");
            let size = p.size(sector).expect("a read partition's size fits in u64");
            let end = offset.checked_add(size).expect("its end fits in u64");
            assert!(
                size > 0 && end <= len,
                "{p:?} outside a disk of {len} bytes"
            );
            assert!(offset >= 3 * sector, "{p:?} over the primary GPT");
            offset..end
        })
        .collect()
}

pub fn gpt(data: &[u8]) {
    let Some(image) = image(data) else {
        return;
    };
    let len = image.bytes.len() as u64;
    let table = match image.table() {
        Ok(table) => table,
        Err(e) => {
            assert!(e.to_string().contains(Image::PATH), "{e}");
            return;
        }
    };
    assert_eq!(table.sector_size, image.sector);
    assert_eq!(table.disk.to_str(), Some(Image::PATH));
    let ranges = assert_inside(&table, len);

    // Write one entry's attributes (from the input's bits, so that some writes change nothing).
    let index = u32::from(data[0] >> 4) + 1;
    let attributes = crc32fast::hash(data).into();
    let mut written = image.clone();
    let result = written.write_attributes(index, attributes);
    assert_eq!(
        written.bytes.len(),
        image.bytes.len(),
        "the disk changed size"
    );
    for r in &ranges {
        let r = r.start as usize..r.end as usize;
        assert!(
            written.bytes[r.clone()] == image.bytes[r.clone()],
            "a write changed partition bytes {r:?}"
        );
    }
    let Some(part) = table.partitions.iter().find(|p| p.index == index) else {
        assert!(
            result.is_err(),
            "wrote partition {index}, which is not in {table:?}"
        );
        return;
    };
    result.unwrap_or_else(|e| panic!("writing partition {index} of a table that reads: {e}"));
    let back = written.table().expect("a written table reads back");
    let mut want = table.clone();
    want.partitions
        .iter_mut()
        .filter(|p| p.index == part.index)
        .for_each(|p| p.attributes = attributes);
    assert_eq!(
        back, want,
        "the write changed more than one attribute field"
    );
    // Both copies whole now: writing the same value again writes nothing.
    let mut again = written.clone();
    again
        .write_attributes(index, attributes)
        .expect("the same write again");
    assert!(
        again.bytes == written.bytes,
        "a repeated write changed the disk"
    );
}
