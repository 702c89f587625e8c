//! Model providers served over real HTTP on loopback, so the real client code runs in tests and
//! CI: the scripted model and the cassette replayer.

mod replay;
mod scripted;

pub use replay::ReplayServer;
pub use scripted::{
    FaultPlan, ModelFault, Script, ScriptTurn, ScriptedArguments, ScriptedCall, ScriptedOptions,
    ScriptedServer, Violation,
};
