//! The node's services (the seed's names): Seeder, Finder, Synchronizer, and the supervisor that
//! runs them.

pub mod finder;
pub mod seeder;
pub mod supervisor;
pub mod sync;
