"""Time the WeChat trade-bill parser on a generated bill (not a test: nothing here asserts speed).

    .venv/bin/python -m tests.ext.wechat_bill_timing [LINES]   # default 1 000 000

The bill has the 27 columns of a real ALL bill, one refund line in fifty, unique ids, times spread
over the day and amounts from 1.00 to 5000.99 yuan with a 0.6 % fee, and a correct summary line;
every parsed line is counted and the summary check must pass.
"""

from __future__ import annotations

import sys
import time

from ext.wechat import WechatAdapter, WechatConfig

HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
REFUND_EVERY = 50


def yuan(fen: int, places: int = 2) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}" + "0" * (places - 2)


def generate(lines: int) -> bytes:
    out = [HEADER]
    settle = refund = fee_total = total = applied = 0
    for i in range(lines):
        second = i * 86400 // lines
        when = f"2025-01-15 {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        amount = 100 + (i * 7919) % 500000
        fee = (amount * 6 + 500) // 1000
        txn, order = f"42000025012025011{i:011d}", f"TOPUP{i:012d}"
        common = [
            "wx2421b1c4370ec43b",
            "1900000109",
            "0",
            "",
            txn,
            order,
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "JSAPI",
        ]
        if i % REFUND_EVERY == REFUND_EVERY - 1:
            cells = [
                when,
                *common,
                "REFUND",
                "CMC",
                "CNY",
                "0.00",
                "0.00",
                f"5030000250{i:019d}",
                f"RF{i:012d}",
                yuan(amount),
                "0.00",
                "ORIGINAL",
                "SUCCESS",
                "加油卡充值",
                "fs1.1001.S01",
                yuan(-fee, 5),
                "0.60%",
                "0.00",
                yuan(amount),
                "",
            ]
            refund, applied, fee_total = refund + amount, applied + amount, fee_total - fee
        else:
            cells = [
                when,
                *common,
                "SUCCESS",
                "CMC",
                "CNY",
                yuan(amount),
                "0.00",
                "0",
                "0",
                "0.00",
                "0.00",
                "",
                "",
                "加油卡充值",
                "fs1.1001.S01",
                yuan(fee, 5),
                "0.60%",
                yuan(amount),
                "0.00",
                "",
            ]
            settle, total, fee_total = settle + amount, total + amount, fee_total + fee
        out.append(",".join("`" + cell for cell in cells))
    out.append(SUMMARY)
    summary = [
        str(lines),
        yuan(settle),
        yuan(refund),
        "0.00",
        yuan(fee_total, 5),
        yuan(total),
        yuan(applied),
    ]
    out.append(",".join("`" + cell for cell in summary))
    return ("\r\n".join(out) + "\r\n").encode()


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    data = generate(lines)
    adapter = WechatAdapter(
        WechatConfig(
            mch_id="1900000109", app_id="wx2421b1c4370ec43b", api_version="v2", api_key="k" * 32
        )
    )
    wall, cpu = time.perf_counter(), time.process_time()
    parsed = sum(1 for _ in adapter.parse_statement(data, business_date="2025-01-15"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert parsed == lines, (parsed, lines)
    print(
        f"{parsed} lines, {len(data) / 1e6:.0f} MB: parse_statement {wall:.2f} s wall, {cpu:.2f} s CPU"
    )


if __name__ == "__main__":
    main()
