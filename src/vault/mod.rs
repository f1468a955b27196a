//! The vault: preserved data, one snapshot per migration. (The storage layer lands
//! next; for now this module holds the value type the database adapters produce.)

mod value;

pub use value::Value;
