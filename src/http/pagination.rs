//! The list query of SPEC section 3: `limit` (1..100, default 20), `after`, `before`,
//! `order` (asc|desc).

use serde::Deserialize;

use crate::domain::ids::parse_id;
use crate::error::ApiError;
use crate::storage::{Order, PageQuery};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
    after: Option<String>,
    before: Option<String>,
    order: Option<String>,
}

impl ListParams {
    pub fn into_query(self, default_order: Order) -> Result<PageQuery<String>, ApiError> {
        let limit = match self.limit.as_deref() {
            None => 20,
            Some(text) => match text.parse::<u32>() {
                Ok(n @ 1..=100) => n,
                _ => {
                    return Err(ApiError::invalid_param(
                        "limit",
                        "`limit` must be an integer from 1 to 100",
                    ))
                }
            },
        };
        let order = match self.order.as_deref() {
            None => default_order,
            Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "order",
                    "`order` must be asc or desc",
                ))
            }
        };
        Ok(PageQuery {
            limit,
            after: self
                .after
                .as_deref()
                .map(|a| parse_id(a, "after"))
                .transpose()?,
            before: self
                .before
                .as_deref()
                .map(|b| parse_id(b, "before"))
                .transpose()?,
            order,
        })
    }
}
