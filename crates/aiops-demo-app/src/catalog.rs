//! The API's domain: a deterministic product catalogue, search over it, and order validation.
//!
//! Items are computed from their id (a few thousand rounds of mixing stand in for a database
//! read), so a cache miss costs real CPU and a hit visibly saves it, with no state to seed.

use std::hint::black_box;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

/// Ids run from 1 to this.
pub const MAX_ITEM_ID: u64 = 1_000_000;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 64;
/// Most results one search returns.
pub const MAX_SEARCH_LIMIT: u64 = 50;
/// Most units of an item one order may ask for.
pub const MAX_QUANTITY: u64 = 100;
/// Longest customer name, in characters.
pub const MAX_CUSTOMER_CHARS: usize = 64;

const ADJECTIVES: [&str; 16] = [
    "red", "blue", "green", "black", "white", "silver", "golden", "tiny", "large", "quiet",
    "rapid", "sturdy", "vintage", "modern", "rustic", "compact",
];
const MATERIALS: [&str; 16] = [
    "oak", "steel", "glass", "cotton", "leather", "bamboo", "copper", "wool", "marble", "linen",
    "ceramic", "walnut", "brass", "cork", "granite", "silk",
];
const NOUNS: [&str; 16] = [
    "chair", "table", "lamp", "shelf", "desk", "stool", "bench", "mirror", "clock", "vase", "rug",
    "cabinet", "bowl", "kettle", "basket", "frame",
];
/// Distinct names; item `id` is named like item `(id - 1) % NAMES + 1`.
const NAMES: u64 = 16 * 16 * 16;
const MIX_ROUNDS: u32 = 2_000;

/// One product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub id: u64,
    pub name: String,
    pub price_cents: u64,
    pub stock: u32,
    pub tags: [&'static str; 2],
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn name_of(id: u64) -> String {
    let n = (id - 1) % NAMES;
    format!(
        "{} {} {}",
        ADJECTIVES[(n / 256) as usize],
        MATERIALS[(n / 16 % 16) as usize],
        NOUNS[(n % 16) as usize]
    )
}

/// The item with this id (1..=[`MAX_ITEM_ID`]); the same id always gives the same item.
pub fn item(id: u64) -> Item {
    let mut h = id;
    for _ in 0..MIX_ROUNDS {
        h = black_box(splitmix(h));
    }
    let n = (id - 1) % NAMES;
    Item {
        id,
        name: name_of(id),
        price_cents: 199 + h % 49_800,
        stock: ((h >> 32) % 500) as u32,
        tags: [
            ADJECTIVES[(n / 256) as usize],
            MATERIALS[(n / 16 % 16) as usize],
        ],
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub id: u64,
    pub name: &'static str,
}

fn names() -> &'static [String] {
    static NAMES_TABLE: OnceLock<Vec<String>> = OnceLock::new();
    NAMES_TABLE.get_or_init(|| (1..=NAMES).map(name_of).collect())
}

/// Items whose name contains every word of `query` (lower-case), at most `limit`, by id.
pub fn search(query: &str, limit: usize) -> (Vec<Hit>, usize) {
    let words: Vec<&str> = query.split_whitespace().collect();
    let mut total = 0;
    let mut hits = Vec::new();
    for (i, name) in names().iter().enumerate() {
        if words.iter().all(|w| name.contains(w)) {
            total += 1;
            if hits.len() < limit {
                hits.push(Hit {
                    id: i as u64 + 1,
                    name: name.as_str(),
                });
            }
        }
    }
    (hits, total)
}

/// A valid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub item_id: u64,
    pub quantity: u64,
    pub customer: String,
}

/// Why an order body was refused; always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error("request body must be a JSON object with item_id, quantity and customer")]
    NotObject,
    #[error("field `{0}` is required")]
    Missing(&'static str),
    #[error("field `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

const ORDER_FIELDS: [&str; 3] = ["item_id", "quantity", "customer"];

/// Validates an order body, field by field, so the error names the field at fault.
pub fn parse_order(body: &[u8]) -> Result<Order, OrderError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| OrderError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(OrderError::NotObject);
    };
    if let Some(unknown) = obj.keys().find(|k| !ORDER_FIELDS.contains(&k.as_str())) {
        return Err(OrderError::Invalid {
            field: unknown.clone(),
            problem: format!("is not known; an order has {}", ORDER_FIELDS.join(", ")),
        });
    }
    let item_id = int_field(&obj, "item_id", 1, MAX_ITEM_ID)?;
    let quantity = int_field(&obj, "quantity", 1, MAX_QUANTITY)?;
    let customer = match obj.get("customer") {
        None => return Err(OrderError::Missing("customer")),
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= MAX_CUSTOMER_CHARS
                && !s.chars().any(char::is_control) =>
        {
            s.trim().to_owned()
        }
        Some(other) => {
            return Err(OrderError::Invalid {
                field: "customer".into(),
                problem: format!(
                    "must be a non-empty string of at most {MAX_CUSTOMER_CHARS} characters without control characters, got {}",
                    brief(other)
                ),
            });
        }
    };
    Ok(Order {
        item_id,
        quantity,
        customer,
    })
}

fn int_field(
    obj: &Map<String, Value>,
    field: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, OrderError> {
    let v = obj.get(field).ok_or(OrderError::Missing(field))?;
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(OrderError::Invalid {
            field: field.into(),
            problem: format!("must be an integer from {min} to {max}, got {}", brief(v)),
        }),
    }
}

/// A value as shown in an error: short, so a huge body is not echoed back.
fn brief(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 40 {
        let cut = (0..=40).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_deterministic_and_named() {
        assert_eq!(item(42), item(42));
        assert_ne!(item(42).price_cents, item(43).price_cents);
        assert_eq!(item(1).name, "red oak chair");
        assert_eq!(item(1 + NAMES).name, item(1).name);
    }

    #[test]
    fn search_matches_every_word() {
        let (hits, total) = search("blue lamp", 5);
        assert_eq!(hits.len(), 5);
        assert_eq!(total, 16);
        assert!(
            hits.iter()
                .all(|h| h.name.contains("blue") && h.name.contains("lamp"))
        );
        assert_eq!(search("unobtainium", 5).1, 0);
    }

    #[test]
    fn orders_name_the_bad_field() {
        let ok = parse_order(br#"{"item_id": 7, "quantity": 2, "customer": "Ada"}"#).unwrap();
        assert_eq!(ok.quantity, 2);
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"item_id": "7", "quantity": 2, "customer": "Ada"}"#,
                "item_id",
            ),
            (
                br#"{"item_id": 7, "quantity": 0, "customer": "Ada"}"#,
                "quantity",
            ),
            (
                br#"{"item_id": 7, "quantity": 2.5, "customer": "Ada"}"#,
                "quantity",
            ),
            (br#"{"item_id": 7, "customer": "Ada"}"#, "quantity"),
            (
                br#"{"item_id": 7, "quantity": 2, "customer": ""}"#,
                "customer",
            ),
            (
                br#"{"item_id": 7, "quantity": 2, "customer": "Ada", "x": 1}"#,
                "`x`",
            ),
            (
                br#"{"item_id": 7000000, "quantity": 2, "customer": "Ada"}"#,
                "item_id",
            ),
        ];
        for (body, field) in cases {
            let e = parse_order(body).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(matches!(parse_order(b"[1]"), Err(OrderError::NotObject)));
        assert!(matches!(parse_order(b"{"), Err(OrderError::NotJson(_))));
    }
}
