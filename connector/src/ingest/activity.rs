//! What the connector reports about its own writing (the stack's `status.connectors` entry):
//! which series received samples lately, and whether the last write failed.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::storage::series_cache::SeriesId;

#[derive(Default)]
pub struct WriteActivity {
    /// Series with committed samples since the last [`WriteActivity::take_active_series`];
    /// `None` when nobody asks, so that plain installations pay nothing for it.
    active_series: Option<Mutex<HashSet<SeriesId>>>,
    last_error: Mutex<Option<String>>,
}

impl WriteActivity {
    pub fn new(track_series: bool) -> Self {
        WriteActivity {
            active_series: track_series.then(Default::default),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn committed(&self, series: impl IntoIterator<Item = SeriesId>) {
        if let Some(active) = &self.active_series {
            active.lock().expect("not poisoned").extend(series);
        }
    }

    pub(crate) fn write_finished(&self, error: Option<String>) {
        *self.last_error.lock().expect("not poisoned") = error;
    }

    /// How many distinct series received samples since the previous call.
    pub fn take_active_series(&self) -> usize {
        match &self.active_series {
            Some(active) => std::mem::take(&mut *active.lock().expect("not poisoned")).len(),
            None => 0,
        }
    }

    /// The error of the last write, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }
}
