-- Histograms merged by one walk of the two arrays.
--
-- The compactor adds every delta to its keyed rollup row with latency_hist_merge (in ON CONFLICT ... DO UPDATE,
-- once per conflicting row). As a SQL function with a subquery (0006), every call started an executor for an
-- unnest, a GROUP BY and a sorted array_agg. Upserting a copy of comm_rollup's minute rows into itself (51,674
-- conflicts, histograms of 1–2 buckets) took 12.7–15.6 µs a row with it, 7.6 without merging histograms at all,
-- and 8.6–9.1 with this walk. Calls alone: 2.8 against 6.9 µs with 3–7 buckets a side, 57 against 92 with 140–190.
--
-- The walk relies on what every stored histogram is: one number per bucket, in bucket order (the collector
-- writes them so, every SQL that builds one aggregates ORDER BY bucket, and this merge keeps the order).
-- A NULL or empty side gives the other side (NULL and NULL give an empty histogram, as before).

CREATE OR REPLACE FUNCTION latency_hist_merge(a int8[], b int8[]) RETURNS int8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    na integer := coalesce(cardinality(a), 0);
    nb integer := coalesce(cardinality(b), 0);
    i integer := 1;
    j integer := 1;
    x int8;
    y int8;
    merged int8[] := '{}';
BEGIN
    IF nb = 0 THEN
        RETURN coalesce(a, '{}');
    ELSIF na = 0 THEN
        RETURN b;
    END IF;
    WHILE i <= na AND j <= nb LOOP
        x := a[i];
        y := b[j];
        IF (x >> 48) = (y >> 48) THEN
            merged := array_append(merged, x + (y & 281474976710655));
            i := i + 1;
            j := j + 1;
        ELSIF (x >> 48) < (y >> 48) THEN
            merged := array_append(merged, x);
            i := i + 1;
        ELSE
            merged := array_append(merged, y);
            j := j + 1;
        END IF;
    END LOOP;
    IF i <= na THEN
        merged := merged || a[i:na];
    ELSIF j <= nb THEN
        merged := merged || b[j:nb];
    END IF;
    RETURN merged;
END
$$;
