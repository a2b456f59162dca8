//! Where rows are encoded for `COPY ... FROM STDIN (FORMAT binary)`: the series rows a
//! request creates (`_prom_catalog.series_fresh`: id, metric id, label ids), sent whole so
//! that PostgreSQL writes their heap tuples in batches and parses nothing.
//!
//! Hand-written: sqlx sends COPY data ([`sqlx::postgres::PgCopyIn`]) but encodes no rows
//! for it. The format is PostgreSQL's ("COPY", "Binary Format"): a signature, flags and an
//! empty header extension; per row its field count and each field as a length and the
//! type's binary (`send`) form, integers big-endian; a trailer of -1. An `int4[]` is sent as
//! `array_send` writes it: dimensions, a has-nulls flag, the element type's OID, each
//! dimension's length and lower bound, then each element as a length and its value.

/// The OID of PostgreSQL's `int4` type, as `array_recv` checks it.
const INT4_OID: i32 = 23;

/// The rows `(id, metric_id, labels)` of `_prom_catalog.series_fresh`, in the order given,
/// as the body of `COPY _prom_catalog.series_fresh (id, metric_id, labels) FROM STDIN
/// (FORMAT binary)`. Every labels array holds at least one label (a series' name).
pub fn series_rows<'a>(rows: impl ExactSizeIterator<Item = (i64, i32, &'a [i32])>) -> Vec<u8> {
    let mut body = Vec::with_capacity(19 + rows.len() * 80 + 2);
    body.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    body.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    body.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for (id, metric_id, labels) in rows {
        body.extend_from_slice(&3i16.to_be_bytes());
        body.extend_from_slice(&8i32.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&metric_id.to_be_bytes());
        let n = labels.len() as i32;
        body.extend_from_slice(&(20 + 8 * n).to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes()); // dimensions
        body.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
        body.extend_from_slice(&INT4_OID.to_be_bytes());
        body.extend_from_slice(&n.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        for &label in labels {
            body.extend_from_slice(&4i32.to_be_bytes());
            body.extend_from_slice(&label.to_be_bytes());
        }
    }
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_three_fields_between_the_header_and_the_trailer() {
        let labels = [7, 300];
        let body = series_rows([(0x0102_0304_0506_0708i64, 9, &labels[..])].into_iter());
        let mut expected: Vec<u8> = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 9]);
        // 20 bytes of array header and 8 a label.
        expected.extend_from_slice(&[0, 0, 0, 36]);
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 1, 44]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(body, expected);
    }

    #[test]
    fn no_rows_is_the_header_and_the_trailer() {
        let body = series_rows(std::iter::empty::<(i64, i32, &[i32])>());
        assert_eq!(body.len(), 19 + 2);
        assert!(body.ends_with(&[0xff, 0xff]));
    }
}
