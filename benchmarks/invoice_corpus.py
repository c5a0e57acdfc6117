"""A nested corpus for the batch benchmarks: invoices with a vendor, an address, dates, money and line items.

``make_invoices(n)`` gives n (model output, reference) pairs: the reference an invoice, the output a JSON text of
the same invoice with the slips an extractor makes (a typo in a name, a line item dropped or added, an amount off,
a date in another format), so grades take the generic (nested) path with partial credit.
"""

from __future__ import annotations

import json
import random
from datetime import date
from typing import Any

from pydantic import BaseModel


class Address(BaseModel):
    street: str
    city: str
    postal_code: str
    country: str


class Vendor(BaseModel):
    name: str
    vat_id: str
    address: Address


class LineItem(BaseModel):
    description: str
    quantity: int
    unit_price: float
    amount: float


class Invoice(BaseModel):
    invoice_number: str
    issue_date: date
    due_date: date
    currency: str
    vendor: Vendor
    line_items: list[LineItem]
    total: float


WORDS = ["consulting", "hosting", "license", "support", "training", "hardware", "design", "audit", "translation",
         "maintenance", "storage", "bandwidth", "review", "setup"]
CITIES = [("Berlin", "10115", "DE"), ("Paris", "75001", "FR"), ("Madrid", "28001", "ES"), ("Milan", "20121", "IT"),
          ("Vienna", "1010", "AT"), ("Lisbon", "1100-148", "PT")]


def _invoice(rng: random.Random) -> dict[str, Any]:
    items = []
    for _ in range(rng.randint(1, 6)):
        quantity, price = rng.randint(1, 20), round(rng.uniform(5, 500), 2)
        items.append({"description": " ".join(rng.sample(WORDS, 2)), "quantity": quantity, "unit_price": price,
                      "amount": round(quantity * price, 2)})
    city, postal, country = rng.choice(CITIES)
    issued = date(2024, rng.randint(1, 12), rng.randint(1, 28))
    return {"invoice_number": f"INV-{rng.randint(10_000, 99_999)}", "issue_date": issued.isoformat(),
            "due_date": date(2025, issued.month, issued.day).isoformat(), "currency": rng.choice(["EUR", "USD"]),
            "vendor": {"name": f"{rng.choice(WORDS).title()} {rng.choice(['GmbH', 'SA', 'Ltd', 'SRL'])}",
                       "vat_id": f"{country}{rng.randint(10**8, 10**9 - 1)}",
                       "address": {"street": f"{rng.randint(1, 200)} {rng.choice(WORDS).title()} Street", "city": city,
                                   "postal_code": postal, "country": country}},
            "line_items": items, "total": round(sum(i["amount"] for i in items), 2)}


def make_invoices(n: int, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = _invoice(rng)
        pred = json.loads(json.dumps(ref))
        if rng.random() < 0.3:
            name = pred["vendor"]["name"]
            at = rng.randrange(len(name))
            pred["vendor"]["name"] = name[:at] + name[at + 1:]
        if rng.random() < 0.3 and len(pred["line_items"]) > 1:
            pred["line_items"].pop(rng.randrange(len(pred["line_items"])))
        if rng.random() < 0.2:
            pred["line_items"].append({"description": rng.choice(WORDS), "quantity": 1, "unit_price": 9.99, "amount": 9.99})
        if rng.random() < 0.3:
            pred["total"] = round(pred["total"] * 1.01, 2)
        rng.shuffle(pred["line_items"])
        pairs.append((json.dumps(pred), ref))
    return pairs
