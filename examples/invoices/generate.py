"""Writes the quickstart corpus: ~30 short invoices in varied layouts, and expected.jsonl (the true fields of each).

Deterministic (fixed seed), so running it again rewrites the same files. The generated .txt files are committed; this
script is only how they were made: `python examples/invoices/generate.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random(20240301)

VENDORS = [
    ("Acme Tools Ltd", "Unit 4, Riverside Park, Leeds LS1 4AP, UK", "GBP"),
    ("Nordlicht Bürobedarf GmbH", "Hafenstraße 12, 20457 Hamburg, Germany", "EUR"),
    ("Blue Harbor Coffee Roasters", "88 Pier Ave, Seattle, WA 98101, USA", "USD"),
    ("Sakura Print Co.", "3-2-1 Shibuya, Tokyo 150-0002, Japan", "JPY"),
    ("Alpenrose Consulting AG", "Bahnhofstrasse 7, 8001 Zürich, Switzerland", "CHF"),
    ("Maple Leaf Logistics Inc.", "400 King St W, Toronto, ON M5V 1K4, Canada", "CAD"),
    ("Studio Verde S.r.l.", "Via Roma 21, 10121 Torino, Italy", "EUR"),
    ("Brightline Software LLC", "1200 Congress Ave, Austin, TX 78701, USA", "USD"),
    ("Kestrel Cleaning Services", "17 Mill Lane, Bristol BS1 5QT, UK", "GBP"),
    ("Ganesh Textiles Pvt Ltd", "45 MG Road, Bengaluru 560001, India", "INR"),
    ("Fjord Marine Supply AS", "Strandkaien 3, 5013 Bergen, Norway", "EUR"),
    ("Cedar & Pine Carpentry", "9 Oak Street, Portland, ME 04101, USA", "USD"),
]
ITEMS = [
    ("Printer paper A4, box of 5 reams", 24.0),
    ("Toner cartridge, black", 79.5),
    ("Consulting, hourly", 150.0),
    ("Espresso beans 1 kg", 21.0),
    ("Delivery charge", 15.0),
    ("Office chair, ergonomic", 289.0),
    ("Software licence, annual", 1200.0),
    ("Window cleaning, monthly", 95.0),
    ("Cotton fabric, per metre", 6.4),
    ("Oak shelving, custom", 640.0),
    ("Pallet transport, Toronto to Montreal", 410.0),
    ("Business cards, 500", 38.0),
    ("Support hours", 110.0),
    ("Rope, 12 mm, per 50 m coil", 57.25),
    ("Design workshop, half day", 850.0),
    ("USB-C docking station", 129.99),
    ("Installation labour", 65.0),
    ("Milk frother", 44.9),
]
SYMBOL = {"GBP": "£", "EUR": "€", "USD": "$", "JPY": "¥", "CHF": "CHF ", "CAD": "C$", "INR": "₹"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip
TERMS = (
    "Payment is due within 30 days of the invoice date. Late payments accrue interest at 1.5% per month. "
    "Goods remain the property of the seller until paid in full. Please quote the invoice number with your "
    "payment. Any discrepancies must be reported within 7 days of receipt. "
)


def money(amount: float, currency: str) -> str:
    if currency == "JPY":
        return f"{SYMBOL[currency]}{amount:,.0f}"
    return f"{SYMBOL[currency]}{amount:,.2f}"


def make(i: int) -> tuple[str, dict[str, object]]:
    vendor, address, currency = VENDORS[i % len(VENDORS)]
    year, month, day = 2024, rng.randint(1, 12), rng.randint(1, 28)
    number = rng.choice(["INV-{:05d}", "{:06d}", "2024/{:04d}", "AC-{:04d}-B", "R{:07d}"]).format(rng.randint(1, 99999))
    scale = 150 if currency == "JPY" else 80 if currency == "INR" else 1
    lines = []
    for desc, price in rng.sample(ITEMS, rng.randint(1, 4)):
        qty = rng.randint(1, 6)
        unit = round(price * scale, 0 if currency == "JPY" else 2)
        lines.append({"description": desc, "quantity": qty, "amount": round(qty * unit, 2)})
    subtotal = round(sum(float(x["amount"]) for x in lines), 2)
    tax_rate = {"GBP": 0.20, "EUR": 0.19, "CHF": 0.081, "CAD": 0.13, "INR": 0.18, "JPY": 0.10}.get(currency, 0.0)
    tax = round(subtotal * tax_rate, 0 if currency == "JPY" else 2)
    total = round(subtotal + tax, 2)
    iso = f"{year}-{month:02d}-{day:02d}"
    name = MONTHS[month - 1]
    dates = [iso, f"{day:02d}/{month:02d}/{year}", f"{name} {day}, {year}", f"{day}. {name} {year}"]
    shown_date = dates[i % len(dates)]
    layout = i % 6
    out: list[str] = []
    if layout == 0:  # letterhead and table
        out += [vendor.upper(), address, "", f"INVOICE {number}", f"Date: {shown_date}", "Bill to: Harlow & Finch Ltd"]
        out += [""]
        out += [f"{'Description':<40}{'Qty':>5}{'Amount':>14}", "-" * 59]
        out += [f"{x['description']:<40}{x['quantity']:>5}{money(float(x['amount']), currency):>14}" for x in lines]
        out += ["-" * 59, f"{'Subtotal':<45}{money(subtotal, currency):>14}", f"{'Tax':<45}{money(tax, currency):>14}",
                f"{'TOTAL':<45}{money(total, currency):>14}"]  # fmt: skip
    elif layout == 1:  # key: value
        out += [f"Vendor: {vendor}", f"Invoice number: {number}", f"Invoice date: {shown_date}"]
        out += [f"Currency: {currency}", ""]
        out += [f"- {x['description']} x{x['quantity']}: {x['amount']:.2f}" for x in lines]
        out += ["", f"Total due: {total:.2f} {currency}"]
    elif layout == 2:  # prose email
        items = "; ".join(
            f"{x['quantity']} x {x['description']} ({money(float(x['amount']), currency)})" for x in lines
        )
        out += [f"Subject: Invoice {number} from {vendor}", "", "Hello,",
                f"Please find our invoice {number}, dated {shown_date}, for the following: {items}.",
                f"The amount due including tax is {money(total, currency)} ({currency}).", "", "Kind regards,",
                f"Accounts team, {vendor}"]  # fmt: skip
    elif layout == 3:  # markdown table
        out += [f"# {vendor}", f"**Invoice no.** {number}  ", f"**Date** {shown_date}  "]
        out += [f"**Currency** {currency}", ""]
        out += ["| Item | Qty | Amount |", "|---|---:|---:|"]
        out += [f"| {x['description']} | {x['quantity']} | {x['amount']:.2f} |" for x in lines]
        out += [f"| **Total** | | **{total:.2f}** |"]
    elif layout == 4:  # till receipt
        out += [f"*** {vendor} ***", address, f"RECEIPT / INVOICE #{number}", shown_date, ""]
        out += [f"{x['quantity']} {x['description'][:24]:<24} {x['amount']:>10.2f}" for x in lines]
        out += [f"TAX {tax:>32.2f}", f"TOTAL {currency} {total:>26.2f}", "", "Thank you for your business!"]
    else:  # long formal invoice with terms
        out += [f"{vendor}", address, "VAT/Tax ID: " + str(rng.randint(10**8, 10**9)), "", "TAX INVOICE", "",
                f"Invoice reference: {number}", f"Issued: {shown_date}",
                "Purchase order: PO-" + str(rng.randint(1000, 9999)),
                f"All amounts in {currency}.", ""]  # fmt: skip
        for n, x in enumerate(lines, 1):
            out.append(f"{n}. {x['description']} - quantity {x['quantity']} - line total {x['amount']:.2f}")
        out += ["", f"Net: {subtotal:.2f}", f"Tax ({tax_rate:.1%}): {tax:.2f}"]
        out += [f"Amount payable: {total:.2f} {currency}", ""]
        out += ["Terms and conditions", TERMS * rng.randint(2, 4)]
    expected = {"vendor": vendor, "invoice_number": number, "date": iso, "currency": currency, "total": total,
                "line_items": lines}  # fmt: skip
    return "\n".join(out) + "\n", expected


def main() -> None:
    # The documents get a folder of their own, so the prompt and schema beside them are not read as documents.
    (HERE / "docs").mkdir(exist_ok=True)
    with (HERE / "expected.jsonl").open("w", encoding="utf-8") as f:
        for i in range(30):
            name = f"docs/invoice-{i + 1:02d}.txt"
            text, expected = make(i)
            (HERE / name).write_text(text, encoding="utf-8")
            f.write(json.dumps({"file": name, **expected}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
