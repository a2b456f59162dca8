-- Schema version 12: bit-packed values in sample blocks.
--
-- A run of a block (connector/src/storage/codec.rs, docs/storage.md) may now code its values
-- bit-packed, marked by a scale byte of 16 to 31 (decimal scale 0 to 15): the positions of
-- its exceptions, the first scaled value, then every later delta as its distance from the
-- run's median delta, shifted right by the trailing zero bits those distances share and
-- zig-zagged, in a fixed number of bits; deltas that do not fit follow as patches. The
-- encoder picks it for a run when it is shorter than tokens. Blocks written before keep their
-- form and decode as before: only the SQL decoder changes.

CREATE OR REPLACE FUNCTION _prom_catalog.decode_block(p_data bytea, p_exceptions float8[])
RETURNS TABLE (series_id bigint, sample_time timestamptz, sample_value double precision)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_len int := length(p_data);
    v_pos int := 0;
    v_byte int;
    v_shift int;
    v_base bigint;
    v_runs bigint;
    v_series bigint := 0;
    v_n bigint;
    v_x bigint;
    v_t bigint;
    v_times timestamptz[];
    v_count int;
    v_delta bigint;
    v_run bigint;
    v_scale int;
    v_power float8;
    v_m bigint;
    v_exception int := 1;
    v_i int;
    v_k int;
    -- packed runs
    v_e bigint;
    v_positions bigint[];
    v_next bigint;
    v_median bigint;
    v_pshift int;
    v_width int;
    v_bytes bigint;
    v_bitpos bigint;
    v_p bigint;
    v_patch_at bigint[];
    v_patch bigint[];
    v_j int;
    v_d int;
    v_slot bigint;
    v_u bigint;
    v_got int;
    v_off int;
    v_take int;
BEGIN
    v_x := 0;
    v_shift := 0;
    LOOP
        IF v_pos >= v_len OR v_shift > 56 THEN
            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
        END IF;
        v_byte := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        v_x := v_x | ((v_byte & 127)::bigint << v_shift);
        EXIT WHEN v_byte < 128;
        v_shift := v_shift + 7;
    END LOOP;
    v_base := (v_x >> 1) # -(v_x & 1);
    v_runs := 0;
    v_shift := 0;
    LOOP
        IF v_pos >= v_len OR v_shift > 56 THEN
            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
        END IF;
        v_byte := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        v_runs := v_runs | ((v_byte & 127)::bigint << v_shift);
        EXIT WHEN v_byte < 128;
        v_shift := v_shift + 7;
    END LOOP;
    FOR v_r IN 1 .. v_runs LOOP
        v_x := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_x := v_x | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        v_series := v_series + v_x;
        v_n := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_n := v_n | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        IF v_n < 1 OR v_n > 16777216 THEN
            RAISE EXCEPTION 'corrupt sample block: bad run length' USING ERRCODE = 'data_corrupted';
        END IF;
        v_x := 0;
        v_shift := 0;
        LOOP
            IF v_pos >= v_len OR v_shift > 56 THEN
                RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
            END IF;
            v_byte := get_byte(p_data, v_pos);
            v_pos := v_pos + 1;
            v_x := v_x | ((v_byte & 127)::bigint << v_shift);
            EXIT WHEN v_byte < 128;
            v_shift := v_shift + 7;
        END LOOP;
        v_t := v_base + ((v_x >> 1) # -(v_x & 1));
        v_times := ARRAY[(('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond')];
        v_count := 1;
        v_delta := 0;
        -- times: tokens over the deltas between neighbours
        WHILE v_count < v_n LOOP
            v_x := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            IF v_x = 0 THEN
                RAISE EXCEPTION 'corrupt sample block: exception token among times' USING ERRCODE = 'data_corrupted';
            ELSIF v_x <= 2 THEN
                v_run := 1;
                IF v_x = 2 THEN
                    v_run := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_run := v_run | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                END IF;
                IF v_run < 1 OR v_count + v_run > v_n THEN
                    RAISE EXCEPTION 'corrupt sample block: bad run of time deltas' USING ERRCODE = 'data_corrupted';
                END IF;
                FOR v_k IN 1 .. v_run LOOP
                    v_t := v_t + v_delta;
                    v_times := v_times || (('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond');
                END LOOP;
                v_count := v_count + v_run::int;
            ELSE
                v_x := v_x - 2;
                v_delta := v_delta + ((v_x >> 1) # -(v_x & 1));
                v_t := v_t + v_delta;
                v_times := v_times || (('epoch'::timestamptz + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => (v_t / 7200000)::int) + make_interval(hours => ((v_t % 7200000) / 3600000)::int)) + (v_t % 3600000) * interval '1 millisecond');
                v_count := v_count + 1;
            END IF;
        END LOOP;
        IF v_pos >= v_len THEN
            RAISE EXCEPTION 'corrupt sample block: truncated before the scale' USING ERRCODE = 'data_corrupted';
        END IF;
        v_scale := get_byte(p_data, v_pos);
        v_pos := v_pos + 1;
        series_id := v_series;
        IF v_scale = 255 THEN
            FOR v_i IN 1 .. v_n LOOP
                sample_time := v_times[v_i];
                sample_value := p_exceptions[v_exception];
                v_exception := v_exception + 1;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;
        IF v_scale BETWEEN 16 AND 31 THEN
            -- values bit-packed: the positions of the exceptions, the first value, then each
            -- later delta as zigzag((delta - median) >> shift) in width bits, LSB first, but
            -- for the patches after the bits, which give their delta whole
            v_power := ('{1,10,100,1000,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12,1e13,1e14,1e15}'::float8[])[v_scale - 15];
            v_e := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_e := v_e | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            IF v_e >= v_n THEN
                RAISE EXCEPTION 'corrupt sample block: bad count of packed exceptions' USING ERRCODE = 'data_corrupted';
            END IF;
            v_positions := '{}';
            v_next := 0;
            FOR v_k IN 1 .. v_e LOOP
                v_x := 0;
                v_shift := 0;
                LOOP
                    IF v_pos >= v_len OR v_shift > 56 THEN
                        RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_byte := get_byte(p_data, v_pos);
                    v_pos := v_pos + 1;
                    v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                    EXIT WHEN v_byte < 128;
                    v_shift := v_shift + 7;
                END LOOP;
                IF v_x >= v_n - v_next THEN
                    RAISE EXCEPTION 'corrupt sample block: bad position of a packed exception' USING ERRCODE = 'data_corrupted';
                END IF;
                v_x := v_next + v_x;
                v_positions := v_positions || v_x;
                v_next := v_x + 1;
            END LOOP;
            v_x := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            v_m := (v_x >> 1) # -(v_x & 1);
            IF v_m > 9007199254740991 OR v_m < -9007199254740991 THEN
                RAISE EXCEPTION 'corrupt sample block: packed value out of range' USING ERRCODE = 'data_corrupted';
            END IF;
            v_width := 0;
            v_pshift := 0;
            v_p := 0;
            v_patch_at := '{}';
            v_patch := '{}';
            IF v_n - v_e >= 2 THEN
                v_x := 0;
                v_shift := 0;
                LOOP
                    IF v_pos >= v_len OR v_shift > 56 THEN
                        RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_byte := get_byte(p_data, v_pos);
                    v_pos := v_pos + 1;
                    v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                    EXIT WHEN v_byte < 128;
                    v_shift := v_shift + 7;
                END LOOP;
                v_median := (v_x >> 1) # -(v_x & 1);
                IF v_median > 18014398509481984 OR v_median < -18014398509481984 THEN
                    RAISE EXCEPTION 'corrupt sample block: packed delta out of range' USING ERRCODE = 'data_corrupted';
                END IF;
                IF v_pos + 2 > v_len THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated before the width of packed values' USING ERRCODE = 'data_corrupted';
                END IF;
                v_pshift := get_byte(p_data, v_pos);
                v_width := get_byte(p_data, v_pos + 1);
                v_pos := v_pos + 2;
                IF v_pshift + v_width > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: bad width of packed values' USING ERRCODE = 'data_corrupted';
                END IF;
                v_bytes := ((v_n - v_e - 1) * v_width + 7) / 8;
                IF v_bytes > v_len - v_pos THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated packed values' USING ERRCODE = 'data_corrupted';
                END IF;
                v_bitpos := v_pos::bigint * 8;
                v_pos := v_pos + v_bytes::int;
                v_p := 0;
                v_shift := 0;
                LOOP
                    IF v_pos >= v_len OR v_shift > 56 THEN
                        RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_byte := get_byte(p_data, v_pos);
                    v_pos := v_pos + 1;
                    v_p := v_p | ((v_byte & 127)::bigint << v_shift);
                    EXIT WHEN v_byte < 128;
                    v_shift := v_shift + 7;
                END LOOP;
                IF v_p > v_n - v_e - 1 THEN
                    RAISE EXCEPTION 'corrupt sample block: bad count of patches' USING ERRCODE = 'data_corrupted';
                END IF;
                v_next := 0;
                FOR v_k IN 1 .. v_p LOOP
                    v_x := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                    IF v_x >= v_n - v_e - 1 - v_next THEN
                        RAISE EXCEPTION 'corrupt sample block: bad position of a patch' USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_x := v_next + v_x;
                    v_patch_at := v_patch_at || v_x;
                    v_next := v_x + 1;
                    v_x := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                    v_x := (v_x >> 1) # -(v_x & 1);
                    IF v_x > 18014398509481984 OR v_x < -18014398509481984 THEN
                        RAISE EXCEPTION 'corrupt sample block: packed delta out of range' USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_patch := v_patch || v_x;
                END LOOP;
            END IF;
            series_id := v_series;
            v_j := 1;
            v_d := 1;
            v_slot := -1;
            FOR v_i IN 1 .. v_n LOOP
                sample_time := v_times[v_i];
                IF v_j <= v_e AND v_positions[v_j] = v_i - 1 THEN
                    sample_value := p_exceptions[v_exception];
                    v_exception := v_exception + 1;
                    v_j := v_j + 1;
                ELSE
                    IF v_slot >= 0 THEN
                        IF v_d <= v_p AND v_patch_at[v_d] = v_slot THEN
                            v_m := v_m + v_patch[v_d];
                            v_d := v_d + 1;
                            v_bitpos := v_bitpos + v_width;
                        ELSE
                            v_u := 0;
                            v_got := 0;
                            WHILE v_got < v_width LOOP
                                v_off := (v_bitpos & 7)::int;
                                v_take := least(8 - v_off, v_width - v_got);
                                v_u := v_u | (((get_byte(p_data, (v_bitpos >> 3)::int) >> v_off) & ((1 << v_take) - 1))::bigint << v_got);
                                v_got := v_got + v_take;
                                v_bitpos := v_bitpos + v_take;
                            END LOOP;
                            v_m := v_m + v_median + (((v_u >> 1) # -(v_u & 1)) << v_pshift);
                        END IF;
                    END IF;
                    IF v_m > 9007199254740991 OR v_m < -9007199254740991 THEN
                        RAISE EXCEPTION 'corrupt sample block: packed value out of range' USING ERRCODE = 'data_corrupted';
                    END IF;
                    v_slot := v_slot + 1;
                    sample_value := v_m::float8 / v_power;
                END IF;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;
        IF v_scale > 15 THEN
            RAISE EXCEPTION 'corrupt sample block: bad scale %', v_scale USING ERRCODE = 'data_corrupted';
        END IF;
        v_power := ('{1,10,100,1000,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12,1e13,1e14,1e15}'::float8[])[v_scale + 1];
        v_m := 0;
        v_i := 1;
        -- values: tokens over the scaled integers, 0 taking the next exception
        WHILE v_i <= v_n LOOP
            v_x := 0;
            v_shift := 0;
            LOOP
                IF v_pos >= v_len OR v_shift > 56 THEN
                    RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                END IF;
                v_byte := get_byte(p_data, v_pos);
                v_pos := v_pos + 1;
                v_x := v_x | ((v_byte & 127)::bigint << v_shift);
                EXIT WHEN v_byte < 128;
                v_shift := v_shift + 7;
            END LOOP;
            IF v_x = 0 THEN
                sample_time := v_times[v_i];
                sample_value := p_exceptions[v_exception];
                v_exception := v_exception + 1;
                v_i := v_i + 1;
                RETURN NEXT;
            ELSIF v_x <= 2 THEN
                v_run := 1;
                IF v_x = 2 THEN
                    v_run := 0;
                    v_shift := 0;
                    LOOP
                        IF v_pos >= v_len OR v_shift > 56 THEN
                            RAISE EXCEPTION 'corrupt sample block: truncated varint at byte %', v_pos USING ERRCODE = 'data_corrupted';
                        END IF;
                        v_byte := get_byte(p_data, v_pos);
                        v_pos := v_pos + 1;
                        v_run := v_run | ((v_byte & 127)::bigint << v_shift);
                        EXIT WHEN v_byte < 128;
                        v_shift := v_shift + 7;
                    END LOOP;
                END IF;
                IF v_run < 1 OR v_i + v_run - 1 > v_n THEN
                    RAISE EXCEPTION 'corrupt sample block: bad run of values' USING ERRCODE = 'data_corrupted';
                END IF;
                FOR v_k IN 1 .. v_run LOOP
                    sample_time := v_times[v_i];
                    sample_value := v_m::float8 / v_power;
                    v_i := v_i + 1;
                    RETURN NEXT;
                END LOOP;
            ELSE
                v_x := v_x - 2;
                v_m := v_m + ((v_x >> 1) # -(v_x & 1));
                sample_time := v_times[v_i];
                sample_value := v_m::float8 / v_power;
                v_i := v_i + 1;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
    IF v_pos <> v_len THEN
        RAISE EXCEPTION 'corrupt sample block: trailing bytes' USING ERRCODE = 'data_corrupted';
    END IF;
    IF v_exception - 1 > coalesce(cardinality(p_exceptions), 0) THEN
        RAISE EXCEPTION 'corrupt sample block: too few exceptions' USING ERRCODE = 'data_corrupted';
    END IF;
END
$fn$;
