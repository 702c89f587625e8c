//! Policy files against a real database: loading, catalog checks, hash, lint and cases.

use preflight_enforcer::policy::{self, Catalog};

async fn scratch_catalog() -> Catalog {
    let url = std::env::var("PREFLIGHT_SCRATCH_OWNER_URL").expect("scratch url");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    Catalog::read(&pool).await.expect("catalog")
}

fn shop_policy_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/shop/policy.yaml")
}

#[tokio::test]
#[ignore = "needs PREFLIGHT_SCRATCH_OWNER_URL; replaced by testing::database() once it lands"]
async fn shop_policy_loads_against_the_catalog() {
    let catalog = scratch_catalog().await;
    let p = match policy::load(shop_policy_path(), Some(&catalog)) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    for m in p.models.values() {
        eprintln!("{} tools={:?}", m.name, m.tools);
        for c in &m.columns {
            eprintln!(
                "   {:<22} {:<28} {:?} {:?}",
                c.name, c.pg_type, c.action, c.source
            );
        }
    }
    eprintln!("hash {}", p.hash);
    let bare = policy::load(shop_policy_path(), None).unwrap();
    assert_eq!(bare.hash, p.hash);
}

#[tokio::test]
#[ignore = "needs PREFLIGHT_SCRATCH_OWNER_URL; replaced by testing::database() once it lands"]
async fn scratch_bad_policy() {
    let catalog = scratch_catalog().await;
    let text = r#"
version: 2
name: x
extends: production
tenant: {colum: tenant_id}
defaults:
  budgets: {max_scan_rows: 0, max_join_depth: 11, max_rows: {db_qery: 5, default: "10"}}
models:
  customers:
    tenant_column: tenant
    tools: [db_query, db_updat, db_update]
    fields: {emial: allow, ssn: deny, notes: {action: maks}}
    deny: ["*nothing_matches*"]
    writable_fields: [ssn, tenant_id, id, name]
    relations:
      orders: {model: order, foreign_key: customer_id, kind: has_many}
      pm: {model: payment_methods, foreign_key: customer_id, kind: belongs_to}
    require_reason: yes
  payment_methods:
    tenant_column: tenant_id
  ghost:
    tenant_exempt: "nothing"
approvals:
  rules:
    - {name: r1, model: customers, fields: [email], tools: [db_delete]}
budget_store: {redis: {url: "redis://x"}}
audit: {sinks: [postgres, jsonl, s3], retention: {hot: 400d, warm: 365d, cold: 7y}}
"#;
    let e = policy::load_str(text, "bad.yaml", Some(&catalog)).unwrap_err();
    eprintln!("{e}");
}

#[tokio::test]
#[ignore = "needs PREFLIGHT_SCRATCH_OWNER_URL"]
async fn scratch_lint_shop() {
    let catalog = scratch_catalog().await;
    let p = policy::load(shop_policy_path(), Some(&catalog)).unwrap();
    let f = policy::lint(&p, Some(&catalog));
    eprintln!("{}", policy::render_text("shop.yaml", &f));
    eprintln!("{}", policy::render_table(&f));
    let bare = policy::load(shop_policy_path(), None).unwrap();
    let f = policy::lint(&bare, None);
    eprintln!("no catalog:\n{}", policy::render_text("shop.yaml", &f));
}
