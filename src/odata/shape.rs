//! OData results under the API's names: top-level columns are renamed by an alias,
//! nested ones by [`ApiNamesUdf`], which gives a list or struct column the same data
//! under the API's field names (no copy: only the types change). The API's record
//! shape itself (the renamed types, JSON records with `extra` folded back in, times as
//! the service writes them) is the schema's: `crate::schema::api_shape`.

use arrow::array::{Array, make_array};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::schema::api_shape::{api_type, retype};
// At their old path for callers being moved elsewhere (engine.rs, tests/it/ingest.rs);
// new code takes them from `crate::schema::api_shape`.
pub use crate::schema::api_shape::{api_records, api_time, has_nested_names};

/// A list or struct column under the API's nested names.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ApiNamesUdf {
    signature: Signature,
}

impl Default for ApiNamesUdf {
    fn default() -> Self {
        ApiNamesUdf {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ApiNamesUdf {
    fn name(&self) -> &str {
        "odata_api_names"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(args.first().map_or(DataType::Null, api_type))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(arg) = args.args.into_iter().next() else {
            return datafusion::common::exec_err!("odata_api_names takes one argument");
        };
        let array = arg.into_array(rows)?;
        let to = api_type(array.data_type());
        let data = retype(array.to_data(), &to)?;
        Ok(ColumnarValue::Array(make_array(data)))
    }
}
