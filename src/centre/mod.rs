//! `propwatch centre`: the regional centre over many estates. It subscribes to every
//! estate's `propwatch/v1` topics on the group's broker, rebuilds its view from the retained
//! messages (no database needed to show the present), tells a silent estate from one that
//! reports offline devices, and serves the view over HTTP with a command path back to the
//! estates (signed with each estate's secret, answered by the estate).

pub mod alerts;
pub mod config;
pub mod run;
pub mod view;
