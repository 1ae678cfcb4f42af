//! Where an image's bytes live: the mapping between image offsets and data objects
//! (`rbd_data.<id>.<object 016x>`), with Ceph's striping rule. With the default layout
//! (stripe unit = object size, stripe count 1) image byte `b` is in object `b >> order` at
//! offset `b & (object size - 1)`; with STRIPINGV2 consecutive stripe units go round-robin
//! over `stripe_count` objects of an object set.

/// How an image is laid out over objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Object size is `1 << order`.
    pub order: u8,
    /// Bytes written to one object before moving to the next of the set.
    pub stripe_unit: u64,
    /// Objects in a set.
    pub stripe_count: u64,
}

/// A piece of an image range inside one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectExtent {
    /// Object number.
    pub object_no: u64,
    /// Offset inside the object.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// Offset of this piece inside the caller's buffer (from the start of the range).
    pub buffer_offset: u64,
}

impl Layout {
    /// The default layout of `order`.
    pub fn simple(order: u8) -> Layout {
        Layout { order, stripe_unit: 1 << order, stripe_count: 1 }
    }

    /// Object size in bytes.
    pub fn object_size(&self) -> u64 {
        1 << self.order
    }

    /// Whether the layout is the default one (no striping).
    pub fn is_simple(&self) -> bool {
        self.stripe_count <= 1 || self.stripe_unit == self.object_size()
    }

    /// Number of objects an image of `size` bytes spans (Ceph's `rbd info` "in N objects").
    pub fn object_count(&self, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        if self.is_simple() {
            return size.div_ceil(self.object_size());
        }
        let set_bytes = self.object_size() * self.stripe_count;
        let full_sets = size / set_bytes;
        let rest = size % set_bytes;
        let partial = rest.div_ceil(self.stripe_unit).min(self.stripe_count);
        full_sets * self.stripe_count + partial
    }

    /// The object pieces of image range `[offset, offset + length)`, in image order.
    pub fn map(&self, offset: u64, length: u64) -> Vec<ObjectExtent> {
        let mut out: Vec<ObjectExtent> = Vec::new();
        let mut pos = offset;
        let end = offset + length;
        while pos < end {
            let (object_no, in_object, room) = self.locate(pos);
            let len = room.min(end - pos);
            // Merge with the previous piece when it continues it in the same object.
            match out.last_mut() {
                Some(last)
                    if last.object_no == object_no && last.offset + last.length == in_object =>
                {
                    last.length += len;
                }
                _ => out.push(ObjectExtent {
                    object_no,
                    offset: in_object,
                    length: len,
                    buffer_offset: pos - offset,
                }),
            }
            pos += len;
        }
        out
    }

    /// (object, offset in it, bytes until the end of this stripe unit) of image byte `pos`.
    fn locate(&self, pos: u64) -> (u64, u64, u64) {
        if self.is_simple() {
            let size = self.object_size();
            return (pos >> self.order, pos & (size - 1), size - (pos & (size - 1)));
        }
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let units_per_object = self.object_size() / su;
        let block = pos / su;
        let stripe = block / sc;
        let stripe_pos = block % sc;
        let object_set = stripe / units_per_object;
        let object_no = object_set * sc + stripe_pos;
        let in_object = (stripe % units_per_object) * su + pos % su;
        (object_no, in_object, su - pos % su)
    }

    /// The image ranges object `object_no` holds, as (image offset, object offset, length),
    /// in object order (what a copy-up reads from the parent).
    pub fn object_to_image(&self, object_no: u64) -> Vec<(u64, u64, u64)> {
        if self.is_simple() {
            return vec![(object_no << self.order, 0, self.object_size())];
        }
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let units_per_object = self.object_size() / su;
        let object_set = object_no / sc;
        let stripe_pos = object_no % sc;
        (0..units_per_object)
            .map(|unit| {
                let stripe = object_set * units_per_object + unit;
                let block = stripe * sc + stripe_pos;
                (block * su, unit * su, su)
            })
            .collect()
    }
}

/// The name of data object `object_no` of an image with `prefix` (`rbd_data.<id>`).
pub fn data_object(prefix: &str, object_no: u64) -> String {
    format!("{prefix}.{object_no:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn simple_layout_maps_by_shift() {
        let l = Layout::simple(22);
        let mb4 = 4 << 20;
        assert_eq!(l.object_count(10 << 30), 2560);
        assert_eq!(l.object_count(1), 1);
        assert_eq!(l.object_count(0), 0);
        let pieces = l.map(mb4 - 512, 1024);
        assert_eq!(
            pieces,
            vec![
                ObjectExtent { object_no: 0, offset: mb4 - 512, length: 512, buffer_offset: 0 },
                ObjectExtent { object_no: 1, offset: 0, length: 512, buffer_offset: 512 },
            ]
        );
        assert_eq!(data_object("rbd_data.ab", 255), "rbd_data.ab.00000000000000ff");
    }

    #[test]
    fn striping_goes_round_robin_over_the_set() {
        // 16 KiB objects, 4 KiB units, 3 objects per set.
        let l = Layout { order: 14, stripe_unit: 4096, stripe_count: 3 };
        let at = |pos| l.map(pos, 1)[0];
        assert_eq!((at(0).object_no, at(0).offset), (0, 0));
        assert_eq!((at(4096).object_no, at(4096).offset), (1, 0));
        assert_eq!((at(8192).object_no, at(8192).offset), (2, 0));
        assert_eq!((at(12288).object_no, at(12288).offset), (0, 4096));
        // The set is 48 KiB; the next one starts at object 3.
        assert_eq!((at(49152).object_no, at(49152).offset), (3, 0));
        assert_eq!(l.object_count(49152), 3);
        assert_eq!(l.object_count(49153), 4);
        assert_eq!(l.object_count(12288 + 1), 3, "a partial stripe touches every object");
    }

    proptest! {
        /// Every image byte lands in exactly one (object, offset) and object_to_image inverts it.
        #[test]
        fn mapping_is_a_bijection(
            order in 12u8..16, unit_shift in 12u8..16, count in 1u64..5,
            offset in 0u64..(1 << 20), length in 1u64..(1 << 17),
        ) {
            let unit_shift = unit_shift.min(order);
            let l = Layout { order, stripe_unit: 1 << unit_shift, stripe_count: count };
            let pieces = l.map(offset, length);
            prop_assert_eq!(pieces.iter().map(|p| p.length).sum::<u64>(), length);
            let mut expected_buffer = 0;
            for p in &pieces {
                prop_assert_eq!(p.buffer_offset, expected_buffer);
                expected_buffer += p.length;
                prop_assert!(p.offset + p.length <= l.object_size());
                // The piece's first byte maps back to the right image offset.
                let back = l.object_to_image(p.object_no).into_iter().find(|(_, o, len)| {
                    *o <= p.offset && p.offset < o + len
                });
                let (image, obj, _) = back.unwrap();
                prop_assert_eq!(image + (p.offset - obj), offset + p.buffer_offset);
            }
            // object_count covers every object touched below the end.
            let end = offset + length;
            let last = pieces.iter().map(|p| p.object_no).max().unwrap();
            prop_assert!(last < l.object_count(end));
        }
    }
}
