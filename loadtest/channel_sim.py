"""A simulated payment channel: WeChat Pay (API v3) and Alipay, end to end through `fuelswitch channels serve`.

Each channel holds its own private keys (the merchant configuration it hands out carries only the
public halves and shared secrets, as in real life), sends signed top-up and refund notifications over
HTTP to `/notify/<channel>`, replays some, forges some, sends a refund ahead of its payment, and
checks every answer against the channel's own success/failure format. Afterwards it writes its daily
statement in the channel's native format (WeChat trade bill, Alipay GBK 业务明细) with one injected
discrepancy of every type reconciliation reports, and returns what it injected:

    missing_here     a payment on the statement that was never notified
    missing_there    a notified payment left off the statement
    amount_mismatch  a notified payment printed with another amount
    status_mismatch  WeChat: a notified payment printed REVOKED; Alipay (no failed lines in its
                     statement): a payment the operator reversed here, printed as a success
    duplicate        a payment line printed twice
    fee_mismatch     a payment printed with a fee (notifications carry none, so the journal has 0)
    date_mismatch    a payment of 23:59:30 the evening before, printed on this day's statement

Everything else on the statement agrees with what the switch applied (statements' own totals
always add up: the discrepancies are between the channel and the switch, not inside the file).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ext.attach import encode_attach
from ext.money import fen_to_yuan

CST = dt.timezone(dt.timedelta(hours=8))
PAYMENT_MIN_FEN, PAYMENT_MAX_FEN = 1_000, 50_000
REFUND_MAX_FEN = 5_000


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _cst(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, CST)


@dataclass
class Txn:
    """A payment or refund as the channel knows it."""

    kind: str  # payment | refund
    txn_id: str  # the key the switch sees (Alipay refunds: trade_no:out_biz_no)
    amount: int
    time_ms: int
    account_id: str = ""
    original: str = ""  # refunds: the payment's txn_id
    request_no: str = ""  # Alipay refunds: out_biz_no
    order: str = ""
    refundable: int = 0  # payments: what is left to refund


@dataclass
class Line:
    """One statement line before it is printed in the channel's format."""

    txn: Txn
    amount: int
    fee: int = 0
    failed: bool = False


class WechatV3:
    """WeChat Pay API v3: RSA-signed envelope, AES-256-GCM resource; the daily trade bill."""

    name = "wechat"

    def __init__(self) -> None:
        self.mch_id, self.app_id = "1900000109", "wx8888888888888888"
        self.api_v3_key = secrets.token_hex(16)  # 32 ASCII characters, as WeChat issues them
        self.serial = secrets.token_hex(20).upper()
        self.key, self.forger = _new_rsa_key(), _new_rsa_key()
        self._ids = 0

    def merchant_config(self, directory: Path) -> dict[str, Any]:
        (directory / "wechatpay_public.pem").write_text(_public_pem(self.key))
        return {"mch_id": self.mch_id, "app_id": self.app_id, "api_version": "v3", "api_v3_key": self.api_v3_key,
                "platform_keys_file": {self.serial: "wechatpay_public.pem"}}

    def new_id(self, kind: str) -> str:
        self._ids += 1
        return f"{'42000025' if kind == 'payment' else '50300025'}{time.time_ns() % 10**8:08d}{self._ids:012d}"

    def notification(self, txn: Txn, *, forged: bool = False) -> tuple[dict[str, str], bytes]:
        success_time = _cst(txn.time_ms).isoformat()
        if txn.kind == "payment":
            kind, event = "transaction", "TRANSACTION.SUCCESS"
            plain: dict[str, Any] = {
                "mchid": self.mch_id, "appid": self.app_id, "out_trade_no": txn.order, "transaction_id": txn.txn_id,
                "trade_type": "JSAPI", "trade_state": "SUCCESS", "attach": encode_attach(txn.account_id),
                "success_time": success_time, "amount": {"total": txn.amount, "currency": "CNY"}}
        else:
            kind, event = "refund", "REFUND.SUCCESS"
            plain = {"mchid": self.mch_id, "transaction_id": txn.original, "refund_id": txn.txn_id,
                     "out_refund_no": f"R{txn.txn_id}", "refund_status": "SUCCESS", "success_time": success_time,
                     "amount": {"refund": txn.amount, "currency": "CNY"}}
        nonce = secrets.token_hex(6)
        ciphertext = AESGCM(self.api_v3_key.encode()).encrypt(nonce.encode(), json.dumps(plain).encode(),
                                                                kind.encode())
        envelope = {"id": secrets.token_hex(8), "event_type": event, "resource_type": "encrypt-resource",
                    "resource": {"original_type": kind, "algorithm": "AEAD_AES_256_GCM", "associated_data": kind,
                                 "nonce": nonce, "ciphertext": base64.b64encode(ciphertext).decode()}}
        body = json.dumps(envelope, separators=(",", ":")).encode()
        timestamp, header_nonce = str(int(time.time())), secrets.token_hex(16)
        signer = self.forger if forged else self.key  # a forger has everything but WeChat's private key
        signature = signer.sign(f"{timestamp}\n{header_nonce}\n".encode() + body + b"\n", padding.PKCS1v15(),
                                hashes.SHA256())
        return {"Content-Type": "application/json", "Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": header_nonce,
                "Wechatpay-Serial": self.serial, "Wechatpay-Signature": base64.b64encode(signature).decode(),
                "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}, body

    @staticmethod
    def succeeded(status: int, body: bytes) -> bool:
        return status == 204 and body == b""

    @staticmethod
    def refused(status: int, body: bytes) -> bool:
        return status == 400 and json.loads(body or b"{}").get("code") == "FAIL"

    def statement(self, lines: list[Line], day: str) -> bytes:
        header = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
                  "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
                  "手续费,费率,订单金额,申请退款金额,费率备注")
        rows, sums = [], [0] * 5  # settle, refund, fee, order total, refund applied
        for line in lines:
            t = line.txn
            is_refund = t.kind == "refund"
            settle = 0 if is_refund or line.failed else line.amount
            refund = line.amount if is_refund else 0
            fee = -line.fee if is_refund else line.fee
            order_total = 0 if is_refund else line.amount
            state = "REFUND" if is_refund else ("REVOKED" if line.failed else "SUCCESS")
            cells = [_cst(t.time_ms).strftime("%Y-%m-%d %H:%M:%S"), self.app_id, self.mch_id, "0", "",
                     t.original if is_refund else t.txn_id, t.order, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "JSAPI", state,
                     "CMC", "CNY", fen_to_yuan(settle), "0.00", t.txn_id if is_refund else "0",
                     f"R{t.txn_id}" if is_refund else "0", fen_to_yuan(refund), "0.00",
                     "ORIGINAL" if is_refund else "", "SUCCESS" if is_refund else "", "加油卡充值",
                     encode_attach(t.account_id or "0"), fen_to_yuan(fee) + "000", "0.60%", fen_to_yuan(order_total),
                     fen_to_yuan(refund), ""]
            rows.append(",".join("`" + cell for cell in cells))
            for i, value in enumerate((settle, refund, fee, order_total, refund)):
                sums[i] += value
        settle, refund, fee, order_total, applied = sums
        summary = (f"`{len(lines)},`{fen_to_yuan(settle)},`{fen_to_yuan(refund)},`0.00,`{fen_to_yuan(fee)}000,"
                   f"`{fen_to_yuan(order_total)},`{fen_to_yuan(applied)}")
        text = "\r\n".join([header, *rows, "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
                            summary, ""])
        return text.encode()


class Alipay:
    """Alipay: RSA2-signed form notifications; the GBK business statement (业务明细)."""

    name = "alipay"

    def __init__(self) -> None:
        self.app_id, self.seller_id = "2021000117600001", "2088102177846880"
        self.key = _new_rsa_key()
        self._ids = 0

    def merchant_config(self, directory: Path) -> dict[str, Any]:
        (directory / "alipay_public.pem").write_text(_public_pem(self.key))
        return {"app_id": self.app_id, "seller_id": self.seller_id, "alipay_public_key_file": "alipay_public.pem"}

    def new_id(self, kind: str) -> str:
        self._ids += 1
        return f"20250{time.time_ns() % 10**8:08d}220014{self._ids:010d}"

    def notification(self, txn: Txn, *, forged: bool = False) -> tuple[dict[str, str], bytes]:
        trade_no = txn.original if txn.kind == "refund" else txn.txn_id
        params = {"notify_type": "trade_status_sync", "notify_id": secrets.token_hex(12), "charset": "utf-8",
                  "version": "1.0", "app_id": self.app_id, "seller_id": self.seller_id, "trade_no": trade_no,
                  "out_trade_no": txn.order, "trade_status": "TRADE_SUCCESS", "subject": "加油卡充值",
                  "notify_time": _cst(txn.time_ms).strftime("%Y-%m-%d %H:%M:%S")}
        if txn.kind == "payment":
            params.update(total_amount=fen_to_yuan(txn.amount), passback_params=encode_attach(txn.account_id),
                          gmt_payment=_cst(txn.time_ms).strftime("%Y-%m-%d %H:%M:%S"))
        else:
            params.update(out_biz_no=txn.request_no, send_back_fee=fen_to_yuan(txn.amount),
                          refund_fee=fen_to_yuan(txn.amount), gmt_refund=_cst(txn.time_ms).strftime("%Y-%m-%d %H:%M:%S"))
        content = "&".join(f"{k}={params[k]}" for k in sorted(params))
        signature = self.key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())
        signed = {**params, "sign_type": "RSA2", "sign": base64.b64encode(signature).decode()}
        if forged and txn.kind == "payment":  # signed for ¥x, claimed as 100 times that
            signed["total_amount"] = fen_to_yuan(txn.amount * 100)
        return {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, urlencode(signed).encode()

    @staticmethod
    def succeeded(status: int, body: bytes) -> bool:
        return status == 200 and body == b"success"

    @staticmethod
    def refused(status: int, body: bytes) -> bool:
        return status == 400 and body == b"fail"

    def statement(self, lines: list[Line], day: str) -> bytes:
        header = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,"
                  "商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,"
                  "商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")
        rows, counts, received = [], {"交易": 0, "退款": 0}, {"交易": 0, "退款": 0}
        for line in lines:
            t = line.txn
            kind = "退款" if t.kind == "refund" else "交易"
            signed = -line.amount if kind == "退款" else line.amount
            fee = line.fee if kind == "退款" else -line.fee  # printed negative on payments
            when = _cst(t.time_ms).strftime("%Y-%m-%d %H:%M:%S")
            cells = [t.original if kind == "退款" else t.txn_id, t.order, kind, "加油卡充值", when, when, "S01",
                     "中石化北京朝阳站", "", "", "138****0000", fen_to_yuan(signed), fen_to_yuan(signed), "0.00", "0.00",
                     "0.00", "0.00", "0.00", "", "0.00", "0.00", t.request_no, fen_to_yuan(fee), "0.00", ""]
            rows.append(",".join(cell + "\t" for cell in cells))
            counts[kind] += 1
            received[kind] += signed
        compact = day.replace("-", "")
        lines_out = ["#支付宝业务明细查询", "#账号：[20881021778468800156]",
                     f"#起始日期：[{compact[:4]}年{compact[4:6]}月{compact[6:]}日 00:00:00]   终止日期：[...]",
                     "#-----------------------------------------业务明细列表----------------------------------------",
                     header, *rows,
                     "#-----------------------------------------业务明细列表结束------------------------------------",
                     f"#交易合计：{counts['交易']}笔，商家实收共{fen_to_yuan(received['交易'])}元，商家优惠共0.00元",
                     f"#退款合计：{counts['退款']}笔，商家实收退款共{fen_to_yuan(received['退款'])}元，商家优惠退款共0.00元",
                     "#导出时间：[...]"]
        return ("\r\n".join(lines_out) + "\r\n").encode("gbk")


Channel = WechatV3 | Alipay


def channels_toml(channels: Iterable[Channel], directory: Path, **settings: Any) -> Path:
    """The `channels serve` configuration for these channels: public keys and shared secrets only."""
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)  # a JSON string is a valid TOML basic string

    text = [f"{k} = {value(v)}" for k, v in settings.items()]
    for channel in channels:
        text += ["", f"[{channel.name}]", *(f"{k} = {value(v)}" for k, v in channel.merchant_config(directory).items())]
    path = directory / "channels.toml"
    path.write_text("\n".join(text) + "\n")
    return path


@dataclass
class SimResult:
    channel: str
    day: str
    txns: list[Txn] = field(default_factory=list)  # what succeeded at the channel, in order
    eve: Txn | None = None  # the payment of the evening before
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("payments", "refunds", "replays", "forged", "retried"), 0))
    problems: list[str] = field(default_factory=list)

    def balances(self) -> dict[str, int]:
        """Account -> what this channel moved into it (payments minus refunds)."""
        moved: dict[str, int] = {}
        payments = {t.txn_id: t for t in self.txns if t.kind == "payment"}
        for t in (*self.txns, *([self.eve] if self.eve else [])):
            account = t.account_id if t.kind == "payment" else payments[t.original].account_id
            moved[account] = moved.get(account, 0) + (t.amount if t.kind == "payment" else -t.amount)
        return moved


class _Run:
    def __init__(self, channel: Channel, url: str, session: aiohttp.ClientSession, accounts: list[str], day: str,
                 rng: random.Random) -> None:
        self.channel, self.url, self.session, self.accounts, self.rng = channel, url, session, accounts, rng
        self.result = SimResult(channel.name, day)
        self.day_start_ms = int(dt.datetime.fromisoformat(day).replace(tzinfo=CST).timestamp() * 1000)
        self.seconds = 8 * 3600  # the day's traffic starts at 08:00
        self.sent: list[tuple[dict[str, str], bytes]] = []

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        async with self.session.post(f"{self.url}/notify/{self.channel.name}", data=body, headers=headers) as reply:
            return reply.status, await reply.read()

    async def expect(self, what: str, headers: dict[str, str], body: bytes, *, ok: bool = True) -> bool:
        status, answer = await self.post(headers, body)
        good = self.channel.succeeded(status, answer) if ok else self.channel.refused(status, answer)
        if not good:
            self.result.problems.append(f"{self.channel.name} {what}: HTTP {status} {answer[:80]!r}")
        return good

    def payment(self, *, time_ms: int | None = None) -> Txn:
        self.seconds += 1
        txn_id = self.channel.new_id("payment")
        amount = self.rng.randint(PAYMENT_MIN_FEN, PAYMENT_MAX_FEN)
        return Txn("payment", txn_id, amount, time_ms or self.day_start_ms + self.seconds * 1000,
                   account_id=self.rng.choice(self.accounts), order=f"TOPUP{txn_id[-12:]}", refundable=amount)

    def refund_of(self, payment: Txn, amount: int) -> Txn:
        self.seconds += 1
        refund_id = self.channel.new_id("refund")
        request_no = f"RF{refund_id[-12:]}"
        key = f"{payment.txn_id}:{request_no}" if self.channel.name == "alipay" else refund_id
        return Txn("refund", key, amount, self.day_start_ms + self.seconds * 1000, original=payment.txn_id,
                   request_no=request_no if self.channel.name == "alipay" else "", order=payment.order)

    async def send(self, txn: Txn) -> None:
        headers, body = self.channel.notification(txn)
        if await self.expect(f"{txn.kind} {txn.txn_id}", headers, body):
            self.result.txns.append(txn)
            self.sent.append((headers, body))
            self.result.counts[txn.kind + "s"] += 1

    async def opening(self) -> None:
        """The fixed events: a refund ahead of its payment (refused, then retried), a replay, a forgery,
        and last night's payment; the random traffic of `step` repeats all but the first and the last."""
        payment = self.payment()
        refund = self.refund_of(payment, min(payment.amount, REFUND_MAX_FEN))
        payment.refundable -= refund.amount
        headers, body = self.channel.notification(refund)
        status, answer = await self.post(headers, body)
        if status != 409 or self.channel.succeeded(status, answer):
            self.result.problems.append(f"a refund ahead of its payment got HTTP {status} {answer[:80]!r}")
        await self.send(payment)
        await self.send(refund)  # the channel's retry, now that the payment is in
        self.result.counts["retried"] += 1
        if self.sent and await self.expect("replay", *self.sent[0]):
            self.result.counts["replays"] += 1
        if await self.expect("forged payment", *self.channel.notification(self.payment(), forged=True), ok=False):
            self.result.counts["forged"] += 1
        eve = self.payment(time_ms=self.day_start_ms - 30_000)
        headers, body = self.channel.notification(eve)
        if await self.expect(f"payment {eve.txn_id}", headers, body):
            self.result.eve = eve

    async def step(self) -> None:
        roll = self.rng.random()
        refundable = [t for t in self.result.txns if t.kind == "payment" and t.refundable > 0]
        if roll < 0.15 and refundable:
            payment = self.rng.choice(refundable)
            amount = self.rng.randint(1, min(payment.refundable, REFUND_MAX_FEN))
            payment.refundable -= amount  # reserved before sending: concurrent refunds never overdraw
            await self.send(self.refund_of(payment, amount))
        elif roll < 0.30 and self.sent:
            headers, body = self.rng.choice(self.sent)  # the channel resends: same bytes, same signature
            if await self.expect("replay", headers, body):
                self.result.counts["replays"] += 1
        elif roll < 0.35:
            headers, body = self.channel.notification(self.payment(), forged=True)
            if await self.expect("forged payment", headers, body, ok=False):
                self.result.counts["forged"] += 1
        else:
            await self.send(self.payment())


async def run_channel(channel: Channel, gateway_url: str, accounts: list[str], day: str, duration_s: float, *,
                      in_flight: int = 4, seed: int = 1) -> SimResult:
    """Notify `gateway_url` for `duration_s` with `in_flight` notifications outstanding; day's times in `day`."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        run = _Run(channel, gateway_url, session, accounts, day, random.Random(seed))
        await run.opening()
        deadline = time.monotonic() + duration_s

        async def lane() -> None:
            while time.monotonic() < deadline:
                await run.step()

        await asyncio.gather(*(lane() for _ in range(in_flight)))
    return run.result


def write_statement(channel: Channel, result: SimResult, path: Path, *,
                    reversed_here: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The channel's statement of `result.day` with one injected discrepancy of each type; returns them.

    `reversed_here`: payments an operator reversed at the switch that the channel printed as paid
    (status_mismatch); without any, an Alipay statement has no status_mismatch, WeChat prints one REVOKED.
    """
    reversed_ids = set(reversed_here)
    refunded = {t.original for t in result.txns if t.kind == "refund"}
    plain = [t for t in result.txns if t.kind == "payment" and t.txn_id not in refunded | reversed_ids]
    if len(plain) < 5:
        raise ValueError("too few payments without refunds to inject into; run longer")
    dropped, other_amount, failed, doubled, with_fee = plain[:5]
    injected = [("missing_there", dropped.txn_id), ("amount_mismatch", other_amount.txn_id),
                ("duplicate", doubled.txn_id), ("fee_mismatch", with_fee.txn_id)]
    lines: list[Line] = []
    for t in result.txns:
        if t is dropped:
            continue
        line = Line(t, t.amount)
        if t is other_amount:
            line.amount += 100
        elif t is with_fee:
            line.fee = 6
        elif t is failed and channel.name == "wechat":
            line.failed = True
            injected.append(("status_mismatch", t.txn_id))
        elif t.txn_id in reversed_ids:
            injected.append(("status_mismatch", t.txn_id))
        lines.append(line)
        if t is doubled:
            lines.append(Line(t, t.amount))
    never = Txn("payment", channel.new_id("payment"), 4_321, result.txns[-1].time_ms + 1_000, order="TOPUP-LOST")
    lines.append(Line(never, never.amount))
    injected.append(("missing_here", never.txn_id))
    if result.eve is not None:  # the channel cut its day later than midnight: yesterday's payment is on it
        lines.append(Line(result.eve, result.eve.amount))
        injected.append(("date_mismatch", result.eve.txn_id))
    path.write_bytes(channel.statement(lines, result.day))
    return sorted(injected)
