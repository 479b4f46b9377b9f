"""A pure, deterministic card-traffic generator with labelled fraud.

Same seed and configuration → the same events, byte for byte. Nothing here touches Kafka, files or
the clock: :func:`generate` yields :class:`SimEvent` ``(tx, is_fraud, fraud_kind)`` in event-time
order; the publisher and the trainer build on it.

The world
---------
* Card holders (``card-000123``) each have a home country (its currency and UTC offset), a typical
  amount (lognormal around a per-card median), a daily transaction rate, preferred channels, a few
  usual shops, ATMs and web merchants, and one or two devices for e-commerce. A few travel abroad
  for some days (legitimate foreign spending at new merchants). Rare legitimate big purchases,
  new phones and small amounts (coffee, parking) keep the fraud signals imperfect.
* Merchants (``m-01234``) have a country, a kind (shop, ATM, web) and a merchant category code.
* Activity follows the *local* clock: quiet nights, lunch and evening peaks, busier Fridays and
  Saturdays, quieter Sundays. Offsets are fixed standard offsets (no daylight saving).

Fraud (``fraud_kind``)
----------------------
* ``compromised_card`` — a burst of 3-8 unusual, high-amount purchases over one or two hours at
  risky merchant categories, online from a new device or with a cloned card, often abroad; a
  share of these are "stealthy" (ordinary amounts) and hard to catch.
* ``compromised_merchant`` — a colluding or skimmed merchant where 10-40 cards are defrauded over
  2-5 days, each at several times its usual amount, usually its first visit there.
* ``account_takeover`` — e-commerce from a new device in another country (its offset), 2-5
  purchases within a few hours.
* ``card_testing`` — 5-20 amounts below 5.00 within minutes at a digital-goods merchant, then one
  or two large purchases.
* ``compromised_terminal`` — a skimmed shop terminal or ATM: for 10-28 days every transaction
  there is fraudulent (amounts and cards look ordinary; only what labels later say about the
  terminal gives it away — the Handbook's "compromised terminal" scenario).
* ``leaked_credentials`` — a card's details leaked: for 10-20 days a third of its transactions
  are fraudulent at 3-8 times the amount it would have been.

``fraud_rate`` is the expected share of fraudulent transactions; episodes are scheduled from it
with a per-kind accumulator, so the realised rate stays close and every kind appears early.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from heapq import heappop, heappush
from typing import NamedTuple

import numpy as np

from fraudstream.core.messages import Feedback, Transaction

FRAUD_KINDS = (
    "compromised_card",
    "compromised_merchant",
    "account_takeover",
    "card_testing",
    "compromised_terminal",
    "leaked_credentials",
)

# code, standard UTC offset (s), currency, weight as a card holder's home
_COUNTRIES: tuple[tuple[str, int, str, float], ...] = (
    ("GB", 0, "GBP", 0.20),
    ("DE", 3600, "EUR", 0.18),
    ("FR", 3600, "EUR", 0.15),
    ("ES", 3600, "EUR", 0.10),
    ("IT", 3600, "EUR", 0.10),
    ("NL", 3600, "EUR", 0.07),
    ("PL", 3600, "PLN", 0.07),
    ("SE", 3600, "SEK", 0.05),
    ("IE", 0, "EUR", 0.03),
    ("US", -18000, "USD", 0.05),
)
# Where account takeovers come from (none of them is anyone's home).
_FRAUD_COUNTRIES: tuple[tuple[str, int, str], ...] = (
    ("BR", -10800, "BRL"),
    ("RO", 7200, "RON"),
    ("VN", 25200, "VND"),
    ("NG", 3600, "NGN"),
    ("ID", 25200, "IDR"),
    ("MX", -21600, "MXN"),
)
_OFFSET = {c[0]: c[1] for c in _COUNTRIES} | {c[0]: c[1] for c in _FRAUD_COUNTRIES}
_CURRENCY = {c[0]: c[2] for c in _COUNTRIES} | {c[0]: c[2] for c in _FRAUD_COUNTRIES}

# mcc → (weight among shops, weight among web merchants, amount multiplier)
_MCC: dict[int, tuple[float, float, float]] = {
    5411: (0.24, 0.00, 1.0),  # grocery
    5812: (0.14, 0.00, 1.0),  # restaurants
    5814: (0.10, 0.00, 0.25),  # fast food / coffee
    5541: (0.09, 0.00, 1.3),  # fuel
    5912: (0.06, 0.00, 0.8),  # pharmacy
    5311: (0.05, 0.08, 1.8),  # department stores
    5651: (0.07, 0.10, 1.6),  # clothing
    4111: (0.06, 0.00, 0.15),  # local transport
    5499: (0.04, 0.00, 0.6),  # convenience food
    5999: (0.05, 0.20, 1.2),  # misc retail / marketplaces
    5732: (0.03, 0.08, 4.0),  # electronics
    5944: (0.01, 0.01, 5.0),  # jewellery
    7011: (0.02, 0.04, 5.0),  # hotels
    7995: (0.01, 0.01, 1.5),  # gambling
    4814: (0.00, 0.10, 1.0),  # telecom
    5734: (0.00, 0.06, 1.0),  # software
    5816: (0.00, 0.08, 0.4),  # digital games
    5818: (0.00, 0.08, 0.4),  # digital goods
    4722: (0.00, 0.05, 6.0),  # travel agencies
    4511: (0.00, 0.04, 7.0),  # airlines
    4829: (0.00, 0.02, 3.0),  # money transfer
    6051: (0.00, 0.02, 4.0),  # quasi-cash / crypto
    5967: (0.00, 0.01, 1.0),  # direct marketing
}
_ATM_MCC = 6011
_RISKY_MCC = frozenset({5732, 5944, 5999, 5816, 5818, 6051, 4829, 7995, 5311, 4722})
_TESTING_MCC = frozenset({5816, 5818, 4814, 5999, 5967})

# Local-time activity by hour (relative) and by weekday (Monday first).
_HOURLY = np.array(
    [0.3, 0.2, 0.12, 0.1, 0.1, 0.15, 0.4, 0.8, 1.1, 1.2, 1.3, 1.5,
     1.7, 1.5, 1.3, 1.3, 1.4, 1.6, 1.7, 1.6, 1.3, 1.0, 0.7, 0.5]
)  # fmt: skip
_HOURLY = _HOURLY / _HOURLY.sum()
_WEEKDAY = np.array([0.95, 0.95, 1.0, 1.0, 1.15, 1.2, 0.8])
_CHANNEL_NAMES = ("pos", "ecom", "atm", "moto")

# Expected fraudulent transactions per episode (used to turn a fraud rate into episode counts);
# the two kinds that corrupt ordinary traffic depend on the world (see _Generator.__init__).
_EPISODE_SIZE = {
    "compromised_card": 5.5,
    "compromised_merchant": 37.5,
    "account_takeover": 3.5,
    "card_testing": 14.0,
}
_TERMINAL_DAYS = (10, 28)  # a compromised terminal stays compromised this many days
_LEAK_DAYS = (10, 20)
_LEAK_SHARE = 1 / 3  # of a leaked card's transactions, the fraudulent ones
_LEAK_SCALE = (3.0, 8.0)


class SimEvent(NamedTuple):
    tx: Transaction
    is_fraud: bool
    fraud_kind: str | None


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 0
    n_cards: int = 5000
    n_merchants: int = 1500
    start: str = "2026-01-01T00:00:00Z"
    fraud_rate: float = 0.004  # expected share of fraudulent transactions
    tx_per_card_day: float = 2.0  # mean legitimate transactions per card per day
    # Share of the fraudulent transactions that each kind contributes.
    fraud_mix: Mapping[str, float] = field(
        default_factory=lambda: {
            "compromised_card": 0.20,
            "compromised_merchant": 0.10,
            "account_takeover": 0.15,
            "card_testing": 0.15,
            "compromised_terminal": 0.25,
            "leaked_credentials": 0.15,
        }
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {self.fraud_rate}")
        if self.n_cards < 1 or self.n_merchants < 20:
            raise ValueError("need at least 1 card and 20 merchants")
        unknown = set(self.fraud_mix) - set(FRAUD_KINDS)
        if unknown:
            raise ValueError(f"unknown fraud kinds {sorted(unknown)}; known: {FRAUD_KINDS}")


def parse_start(start: str) -> float:
    dt = datetime.fromisoformat(start)
    if dt.tzinfo is None:
        raise ValueError(f"start {start!r} needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return dt.timestamp()


def format_event_time(ts_ms: int, offset_s: int) -> str:
    """RFC 3339 with milliseconds in the given local offset, e.g. 2026-01-01T09:13:27.123+01:00."""
    secs, ms = divmod(ts_ms, 1000)
    day, sod = divmod(secs + offset_s, 86400)
    hh, rest = divmod(sod, 3600)
    mm, ss = divmod(rest, 60)
    return f"{_date(day)}T{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}{_suffix(offset_s)}"


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


@lru_cache(maxsize=256)
def _suffix(offset_s: int) -> str:
    sign = "+" if offset_s >= 0 else "-"
    hh, mm = divmod(abs(offset_s) // 60, 60)
    return f"{sign}{hh:02d}:{mm:02d}"


# An event before it becomes a Transaction: (ts_ms, card, merchant, amount, channel, device,
# country override or "", offset override or None, fraud kind or None)
_Raw = tuple[int, int, int, float, str, str | None, str, int | None, str | None]


class _World:
    """Cards, merchants and their profiles, drawn once from the seed."""

    def __init__(self, cfg: SimConfig, rng: np.random.Generator, r: random.Random) -> None:
        self.cfg = cfg
        codes = [c[0] for c in _COUNTRIES]
        weights = np.array([c[3] for c in _COUNTRIES])
        weights = weights / weights.sum()
        self.codes = codes

        # --- merchants ------------------------------------------------------------------------
        m = cfg.n_merchants
        self.m_country = [codes[i] for i in rng.choice(len(codes), size=m, p=weights)]
        kind_u = rng.random(m)
        shop_mccs = [k for k, v in _MCC.items() if v[0] > 0]
        shop_w = np.array([_MCC[k][0] for k in shop_mccs])
        web_mccs = [k for k, v in _MCC.items() if v[1] > 0]
        web_w = np.array([_MCC[k][1] for k in web_mccs])
        self.m_kind: list[str] = []
        self.m_mcc: list[int] = []
        for i in range(m):
            # The first merchants of each kind are guaranteed so small worlds have every kind.
            if i < 3 or (i >= 9 and kind_u[i] < 0.60):
                kind, mcc = "shop", int(rng.choice(shop_mccs, p=shop_w / shop_w.sum()))
            elif i < 6 or (i >= 9 and kind_u[i] < 0.68):
                kind, mcc = "atm", _ATM_MCC
            else:
                kind, mcc = "web", int(rng.choice(web_mccs, p=web_w / web_w.sum()))
            self.m_kind.append(kind)
            self.m_mcc.append(mcc)
        self.pool: dict[tuple[str, str], list[int]] = {}
        self.global_pool: dict[str, list[int]] = {"shop": [], "atm": [], "web": []}
        for i in range(m):
            self.pool.setdefault((self.m_kind[i], self.m_country[i]), []).append(i)
            self.global_pool[self.m_kind[i]].append(i)
        self.risky_web = [
            i for i in self.global_pool["web"] if self.m_mcc[i] in _RISKY_MCC
        ] or self.global_pool["web"]
        self.risky_shop = [
            i for i in self.global_pool["shop"] if self.m_mcc[i] in _RISKY_MCC
        ] or self.global_pool["shop"]
        self.testing_web = [
            i for i in self.global_pool["web"] if self.m_mcc[i] in _TESTING_MCC
        ] or self.global_pool["web"]

        # --- cards ----------------------------------------------------------------------------
        n = cfg.n_cards
        self.c_home = [codes[i] for i in rng.choice(len(codes), size=n, p=weights)]
        self.c_mu = rng.normal(3.0, 0.45, size=n)  # log of the card's typical amount
        sigma = 0.6
        self.c_rate = cfg.tx_per_card_day * rng.lognormal(-sigma * sigma / 2, sigma, size=n)
        probs = rng.dirichlet([6.0, 3.0, 0.8, 0.2], size=n)
        self.c_chan_cum = np.cumsum(probs, axis=1).tolist()
        self.c_shops: list[list[int]] = []
        self.c_atms: list[list[int]] = []
        self.c_webs: list[list[int]] = []
        self.c_devices: list[list[str]] = []
        for c in range(n):
            home = self.c_home[c]
            self.c_shops.append(self._sample(r, "shop", home, 6))
            self.c_atms.append(self._sample(r, "atm", home, 2))
            webs = self._sample(r, "web", home, 3) + r.sample(self.global_pool["web"], 1)
            self.c_webs.append(webs)
            self.c_devices.append([self.new_device(r) for _ in range(1 + (r.random() < 0.3))])
        self.cards_by_home: dict[str, list[int]] = {}
        for c, home in enumerate(self.c_home):
            self.cards_by_home.setdefault(home, []).append(c)
        # Travel: card → (country, until_ts)
        self.travel: dict[int, tuple[str, float]] = {}

    def _sample(self, r: random.Random, kind: str, country: str, k: int) -> list[int]:
        pool = self.pool.get((kind, country)) or self.global_pool[kind]
        return r.sample(pool, min(k, len(pool)))

    def pick(self, r: random.Random, kind: str, country: str) -> int:
        pool = self.pool.get((kind, country)) or self.global_pool[kind]
        return pool[r.randrange(len(pool))]

    @staticmethod
    def new_device(r: random.Random) -> str:
        return f"dev-{r.getrandbits(40):010x}"

    def card_amount(self, r: random.Random, c: int, mcc: int, scale: float = 1.0) -> float:
        mult = _MCC[mcc][2] if mcc in _MCC else 1.0
        amount = math.exp(self.c_mu[c] + r.gauss(0.0, 0.6)) * mult * scale
        return max(round(amount, 2), 0.3)


class _Generator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.r = random.Random(cfg.seed)
        self.w = _World(cfg, self.rng, self.r)
        self.t0 = parse_start(cfg.start)
        self.pending: list[tuple[int, int, _Raw]] = []  # heap of (ts_ms, seq, raw)
        self.seq = 0
        self.counter = 0
        expected_daily = float(self.w.c_rate.sum())
        budget = expected_daily * cfg.fraud_rate / (1.0 - cfg.fraud_rate) if cfg.fraud_rate else 0
        total_mix = sum(cfg.fraud_mix.values()) or 1.0
        # A terminal sees its share of the cards' in-person and ATM traffic.
        chan = np.diff(np.c_[np.zeros(cfg.n_cards), np.asarray(self.w.c_chan_cum)], axis=1)
        in_person = float((self.w.c_rate * (chan[:, 0] + chan[:, 2])).sum())
        terminals = len(self.w.global_pool["shop"]) + len(self.w.global_pool["atm"])
        size = {
            **_EPISODE_SIZE,
            "compromised_terminal": in_person / terminals * sum(_TERMINAL_DAYS) / 2,
            "leaked_credentials": cfg.tx_per_card_day * sum(_LEAK_DAYS) / 2 * _LEAK_SHARE,
        }
        self.per_day = {
            k: budget * cfg.fraud_mix.get(k, 0.0) / total_mix / max(size[k], 1.0)
            for k in FRAUD_KINDS
        }
        # Ongoing corruptions of ordinary traffic: merchant / card -> (start_ms, end_ms).
        self.terminals: dict[int, tuple[int, int]] = {}
        self.leaks: dict[int, tuple[int, int]] = {}
        # Start half full, so that even a short run shows the kinds that are due soonest.
        self.acc = dict.fromkeys(FRAUD_KINDS, 0.5)

    # --- scheduling ------------------------------------------------------------------------------
    def push(self, raw: _Raw) -> None:
        self.seq += 1
        heappush(self.pending, (raw[0], self.seq, raw))

    def days(self) -> Iterator[list[_Raw]]:
        day = 0
        while True:
            d0 = self.t0 + day * 86400.0
            d0_ms = round(d0 * 1000)
            raws = self.legit_day(d0, day)
            for kind in FRAUD_KINDS:
                self.acc[kind] += self.per_day[kind]
                while self.acc[kind] >= 1.0:
                    self.acc[kind] -= 1.0
                    self.episode(kind, d0_ms)
            if self.terminals or self.leaks:
                raws = [self.corrupt(raw) for raw in raws]
                self.terminals = {m: w for m, w in self.terminals.items() if w[1] > d0_ms}
                self.leaks = {c: w for c, w in self.leaks.items() if w[1] > d0_ms}
            end_ms = d0_ms + 86_400_000
            while self.pending and self.pending[0][0] < end_ms:
                raws.append(heappop(self.pending)[2])
            raws.sort(key=lambda e: e[0])  # stable: ties keep a deterministic order
            yield raws
            day += 1

    def legit_day(self, d0: float, day: int) -> list[_Raw]:
        w, r, rng = self.w, self.r, self.rng
        n = self.cfg.n_cards
        # Travel starts and ends.
        for c, (_, until) in list(w.travel.items()):
            if until <= d0:
                del w.travel[c]
        for c in np.nonzero(rng.random(n) < 0.003)[0].tolist():
            if c not in w.travel:
                dest = r.choice([x for x in w.codes if x != w.c_home[c]])
                w.travel[c] = (dest, d0 + 86400.0 * r.randint(2, 7))
        where = [w.travel[c][0] if c in w.travel else w.c_home[c] for c in range(n)]
        offs_h = np.array([_OFFSET[x] // 3600 for x in where])
        local_h = np.arange(24)[None, :] + offs_h[:, None]  # cards x utc hours
        weekday0 = datetime.fromtimestamp(d0, UTC).weekday()
        lam = w.c_rate[:, None] * _HOURLY[local_h % 24] * _WEEKDAY[(weekday0 + local_h // 24) % 7]
        counts = rng.poisson(lam)
        nz_cards, nz_hours = np.nonzero(counts)
        reps = counts[nz_cards, nz_hours]
        cards: list[int] = np.repeat(nz_cards, reps).tolist()
        hours = np.repeat(nz_hours, reps)
        ms: list[int] = (hours * 3_600_000 + rng.integers(0, 3_600_000, size=len(hours))).tolist()
        d0_ms = round(d0 * 1000)
        out: list[_Raw] = []
        for c, t in zip(cards, ms, strict=True):
            out.append(self.legit_one(c, d0_ms + t, where[c]))
        return out

    def legit_one(self, c: int, ts_ms: int, here: str) -> _Raw:
        w, r = self.w, self.r
        u = r.random()
        cum = w.c_chan_cum[c]
        ch = "pos" if u < cum[0] else "ecom" if u < cum[1] else "atm" if u < cum[2] else "moto"
        home = w.c_home[c]
        abroad = here != home
        device: str | None = None
        if ch == "pos":
            shops = w.c_shops[c]
            m = shops[r.randrange(len(shops))] if not abroad and r.random() < 0.75 else None
            if m is None:
                m = w.pick(r, "shop", here)
        elif ch == "atm":
            atms = w.c_atms[c]
            m = atms[r.randrange(len(atms))] if not abroad and r.random() < 0.8 else None
            if m is None:
                m = w.pick(r, "atm", here)
        else:
            webs = w.c_webs[c]
            if r.random() < 0.75:
                m = webs[r.randrange(len(webs))]
            else:
                m = w.pick(r, "web", home if r.random() < 0.8 else r.choice(w.codes))
            if ch == "ecom":
                devs = w.c_devices[c]
                if r.random() < 0.003:  # a new phone or laptop: legitimate
                    devs.append(w.new_device(r))
                    if len(devs) > 3:
                        del devs[0]
                device = devs[-1] if len(devs) == 1 or r.random() < 0.7 else r.choice(devs)
        mcc = w.m_mcc[m]
        if ch == "atm":
            amount = float(
                20 * max(1, min(20, round(math.exp(w.c_mu[c] + r.gauss(0.5, 0.5)) / 20)))
            )
        else:
            big = 8.0 if r.random() < 0.005 else 1.0  # a rare legitimate big purchase
            amount = w.card_amount(r, c, mcc, big)
        offset = _OFFSET[w.m_country[m]] if ch in ("pos", "atm") else _OFFSET[here]
        return (ts_ms, c, m, amount, ch, device, "", offset, None)

    def corrupt(self, raw: _Raw) -> _Raw:
        """An ordinary transaction at a compromised terminal, or of a leaked card, turned fraud."""
        ts_ms, c, m = raw[0], raw[1], raw[2]
        window = self.terminals.get(m)
        if window is not None and window[0] <= ts_ms < window[1] and raw[4] in ("pos", "atm"):
            return (*raw[:8], "compromised_terminal")
        window = self.leaks.get(c)
        if window is not None and window[0] <= ts_ms < window[1] and self.r.random() < _LEAK_SHARE:
            amount = round(raw[3] * self.r.uniform(*_LEAK_SCALE), 2)
            return (ts_ms, c, m, amount, *raw[4:8], "leaked_credentials")
        return raw

    # --- fraud episodes --------------------------------------------------------------------------
    def episode(self, kind: str, d0_ms: int) -> None:
        r, w = self.r, self.w
        start = d0_ms + r.randrange(86_400_000)
        c = r.randrange(self.cfg.n_cards)
        if kind == "compromised_terminal":
            terminals = w.global_pool["shop"] + w.global_pool["atm"]
            m = terminals[r.randrange(len(terminals))]
            self.terminals[m] = (start, start + r.randint(*_TERMINAL_DAYS) * 86_400_000)
        elif kind == "leaked_credentials":
            self.leaks[c] = (start, start + r.randint(*_LEAK_DAYS) * 86_400_000)
        elif kind == "compromised_card":
            stealth = r.random() < 0.15
            online = r.random() < 0.6
            device = w.new_device(r) if online else None
            abroad = r.random() < 0.5
            country = r.choice(w.codes) if abroad else w.c_home[c]
            t = start
            for _ in range(r.randint(3, 8)):
                if online:
                    m = r.choice(w.risky_web)
                else:
                    shops = w.pool.get(("shop", country)) or w.global_pool["shop"]
                    risky = [x for x in shops if w.m_mcc[x] in _RISKY_MCC] or shops
                    m = r.choice(risky)
                if stealth:
                    amount = w.card_amount(r, c, w.m_mcc[m])
                else:
                    amount = round(max(math.exp(r.gauss(math.log(250.0), 0.7)), 20.0), 2)
                offset = _OFFSET[w.m_country[m]] if not online else _OFFSET[country]
                ch = "ecom" if online else "pos"
                self.push((t, c, m, amount, ch, device, "", offset, kind))
                t += round(r.expovariate(1 / 900.0) * 1000) + 1000
        elif kind == "compromised_merchant":
            shop = r.random() < 0.7
            m = r.choice(w.global_pool["shop" if shop else "web"])
            span = r.randint(2, 5) * 86_400_000
            local = w.m_country[m]
            locals_ = w.cards_by_home.get(local) or list(range(self.cfg.n_cards))
            for _ in range(r.randint(10, 40)):
                # Mostly the merchant's own country's cards, some visitors.
                pool = locals_ if r.random() < 0.7 else range(self.cfg.n_cards)
                card = pool[r.randrange(len(pool))]
                for _ in range(1 + (r.random() < 0.5)):
                    t = start + r.randrange(span)
                    scale = r.uniform(3.0, 10.0)
                    amount = w.card_amount(r, card, w.m_mcc[m], scale)
                    device = w.c_devices[card][-1] if not shop else None
                    offset = _OFFSET[local] if shop else _OFFSET[w.c_home[card]]
                    ch = "pos" if shop else "ecom"
                    self.push((t, card, m, amount, ch, device, "", offset, kind))
        elif kind == "account_takeover":
            fc, foff, _ = _FRAUD_COUNTRIES[r.randrange(len(_FRAUD_COUNTRIES))]
            device = w.new_device(r)
            t = start
            for _ in range(r.randint(2, 5)):
                m = r.choice(w.risky_web) if r.random() < 0.8 else r.choice(w.global_pool["web"])
                amount = round(max(math.exp(r.gauss(math.log(150.0), 0.8)), 5.0), 2)
                self.push((t, c, m, amount, "ecom", device, fc, foff, kind))
                t += round(r.expovariate(1 / 1800.0) * 1000) + 1000
        else:  # card_testing
            device = w.new_device(r)
            abroad = r.random() < 0.5
            fc, foff, _ = _FRAUD_COUNTRIES[r.randrange(len(_FRAUD_COUNTRIES))]
            country, offset = (fc, foff) if abroad else ("", _OFFSET[w.c_home[c]])
            tester = r.choice(w.testing_web)
            t = start
            for _ in range(r.randint(5, 20)):
                amount = round(r.uniform(0.5, 4.99), 2)
                self.push((t, c, tester, amount, "ecom", device, country, offset, kind))
                t += round(r.expovariate(1 / 40.0) * 1000) + 500
            t += r.randrange(300_000, 3_600_000)
            for _ in range(r.randint(1, 2)):
                m = r.choice(w.risky_web)
                amount = round(max(math.exp(r.gauss(math.log(400.0), 0.6)), 50.0), 2)
                self.push((t, c, m, amount, "ecom", device, country, offset, kind))
                t += round(r.expovariate(1 / 600.0) * 1000) + 1000

    # --- materialise -----------------------------------------------------------------------------
    def to_event(self, raw: _Raw) -> SimEvent:
        ts_ms, c, m, amount, ch, device, country_o, offset_o, kind = raw
        w, r = self.w, self.r
        where = country_o or w.m_country[m]
        offset = offset_o if offset_o is not None else _OFFSET[where]
        currency = _CURRENCY[where]
        country: str | None = where
        mcc: int | None = w.m_mcc[m]
        channel: str | None = ch
        # Optional fields go missing now and then, as in real feeds.
        u = r.random()
        if u < 0.005:
            mcc = None
        elif u < 0.008:
            country = None
        elif u < 0.011:
            channel = None
        self.counter += 1
        tx = Transaction(
            transaction_id=f"t-{self.cfg.seed}-{self.counter:09d}",
            card_id=f"card-{c:06d}",
            merchant_id=f"m-{m:05d}",
            amount=amount,
            currency=currency,
            event_time=format_event_time(ts_ms, offset),
            ts=ts_ms / 1000,
            utc_offset_s=offset,
            mcc=mcc,
            country=country,
            channel=channel,
            device_id=device,
        )
        return SimEvent(tx, kind is not None, kind)


def generate(
    config: SimConfig | None = None, *, n: int | None = None, days: float | None = None
) -> Iterator[SimEvent]:
    """Yield events in event-time order: ``n`` of them, or ``days`` days' worth, or forever."""
    cfg = config or SimConfig()
    g = _Generator(cfg)
    end_ms = None if days is None else round((g.t0 + days * 86400.0) * 1000)
    emitted = 0
    for raws in g.days():
        for raw in raws:
            if (n is not None and emitted >= n) or (end_ms is not None and raw[0] >= end_ms):
                return
            yield g.to_event(raw)
            emitted += 1


def simulate(
    n: int | None = None, days: float | None = None, seed: int = 0, **config: object
) -> list[SimEvent]:
    """Convenience: a list of ``generate(SimConfig(seed=seed, **config), n=n, days=days)``."""
    if n is None and days is None:
        raise ValueError("give n (transactions) or days, or use generate() for an endless stream")
    cfg = SimConfig(seed=seed, **config)  # type: ignore[arg-type]
    return list(generate(cfg, n=n, days=days))


# --- labels --------------------------------------------------------------------------------------


def _rfc3339_utc(ts: float) -> str:
    ms = round(ts * 1000)
    return format_event_time(ms, 0)


def feedback_schedule(
    events: Iterable[tuple[Transaction, bool, str | None] | SimEvent],
    delay_s: float = 3 * 86400.0,
    missing_share: float = 0.1,
    reversal_share: float = 0.01,
    seed: int = 0,
    legit_label_share: float = 0.05,
) -> list[tuple[float, Feedback]]:
    """When which label arrives: a list of ``(due_ts, Feedback)`` sorted by ``due_ts``.

    * Frauds: labelled with probability ``1 - missing_share`` — by a ``chargeback`` (70 %, after
      about ``delay_s``), the ``customer`` (20 %, after about a quarter of it) or an ``analyst``
      (10 %, about half of it). Delays are exponential around those means, at least one minute.
    * Legitimate transactions: only a sample (``legit_label_share``) is ever labelled, as
      not-fraud by an ``analyst`` review (after about half of ``delay_s``); most transactions
      never receive a label, as in real life, and ``missing_share`` applies to them too.
    * Reversals: a share ``reversal_share`` of the labelled transactions receives a second,
      flipped label from an ``analyst`` later; by the contract it replaces the first.

    ``reported_at`` equals ``due_ts`` (RFC 3339, UTC).
    """
    r = random.Random(seed)
    out: list[tuple[float, Feedback]] = []
    for event in events:
        tx, is_fraud = event[0], event[1]
        if is_fraud:
            if r.random() < missing_share:
                continue
            u = r.random()
            source, mean = (
                ("chargeback", delay_s)
                if u < 0.7
                else ("customer", delay_s / 4)
                if u < 0.9
                else ("analyst", delay_s / 2)
            )
        else:
            if r.random() >= legit_label_share * (1.0 - missing_share):
                continue
            source, mean = "analyst", delay_s / 2
        due = tx.ts + max(60.0, r.expovariate(1.0 / mean) if mean > 0 else 60.0)
        out.append((due, Feedback(tx.transaction_id, is_fraud, source, _rfc3339_utc(due))))
        if r.random() < reversal_share:
            later = due + max(60.0, r.expovariate(1.0 / max(delay_s / 2, 60.0)))
            flipped = Feedback(tx.transaction_id, not is_fraud, "analyst", _rfc3339_utc(later))
            out.append((later, flipped))
    out.sort(key=lambda p: (p[0], p[1].transaction_id))
    return out
