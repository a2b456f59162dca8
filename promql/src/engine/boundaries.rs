//! Which samples a selector sees: the one place that says whether range and lookback
//! windows include their start. Prometheus 2.x includes both ends; Prometheus 3 made them
//! left-open, which a later mode will follow by changing this file alone. Times saturate at
//! the ends of the `i64` range rather than overflow.

/// Whether a sample at `t` lies in the window `(ref - width, ref]` or `[ref - width, ref]`.
pub fn in_window(t: i64, reference: i64, width: i64) -> bool {
    !before_window(t, reference, width) && !after_window(t, reference)
}

/// Whether a sample at `t` comes before the window of `width` ending at `reference`: true of
/// a prefix of any time-ordered series.
pub fn before_window(t: i64, reference: i64, width: i64) -> bool {
    t < reference.saturating_sub(width)
}

/// Whether a sample at `t` comes after a window ending at `reference`: false of a prefix of
/// any time-ordered series.
pub fn after_window(t: i64, reference: i64) -> bool {
    t > reference
}

/// The first time a window of `width` ending at `reference` includes.
pub fn window_start(reference: i64, width: i64) -> i64 {
    reference.saturating_sub(width)
}
