/*
 * session.c: a C "plugin" driving the tradecast producer library, as a trade-server
 * plugin's sinks would. Built and run by crates/producer/tests/c_session.rs.
 *
 *   session REDIS_URL SPOOL_DIR session        a scripted trading session: symbols,
 *                                              accounts, IB links, an order, a deal
 *                                              in, a position opened, modified and
 *                                              closed with its deal out, ticks, a
 *                                              margin call, a deposit; flush, close
 *   session REDIS_URL SPOOL_DIR crash N        N deposits while Redis is down; wait
 *                                              until they are in the spool, then
 *                                              _exit without closing (a crash)
 *   session REDIS_URL SPOOL_DIR resume N       N more deposits, flush, close
 *
 * Exit status 0 on success; on failure it prints why on stderr.
 */
#define _POSIX_C_SOURCE 200809L
#include "tradecast_producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Fixed-size string fields: copy and NUL-terminate (truncating). */
#define SET(field, text) snprintf((field), sizeof(field), "%s", (text))

/* Times in the test are UTC: the config's tz_offset_minutes is 0. */
static const int64_t T0 = 1717430400000LL;

static int failures = 0;

static void check(int rc, const char *what) {
    if (rc != TC_OK) {
        fprintf(stderr, "%s: rc=%d (%s)\n", what, rc, tc_last_error());
        failures++;
    }
}

static void on_log(void *user, int32_t level, const char *message) {
    (void)user;
    fprintf(stderr, "[tradecast-producer %d] %s\n", level, message);
}

static tc_producer *open_producer(const char *url, const char *dir) {
    tc_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.redis_url = url;
    cfg.source = "mt5-live-01";
    cfg.spool_dir = dir;
    cfg.connect_timeout_ms = 200;
    cfg.io_timeout_ms = 1000;
    cfg.log = on_log;
    tc_producer *p = tc_producer_open(&cfg);
    if (p == NULL) {
        fprintf(stderr, "tc_producer_open: %s\n", tc_last_error());
        exit(2);
    }
    return p;
}

static void account(tc_producer *p, uint64_t login, const char *name, double balance) {
    tc_account a;
    memset(&a, 0, sizeof a);
    a.login = login;
    SET(a.name, name);
    SET(a.currency, "USD");
    SET(a.group, "real\\std-usd");
    a.leverage = 500;
    a.currency_digits = 2;
    a.balance = balance;
    a.credit = 0.0;
    a.margin = 0.0;
    a.equity = TC_ABSENT; /* tradecast computes equity itself */
    a.margin_free = TC_ABSENT;
    a.margin_level = TC_ABSENT;
    a.time_msc = T0;
    check(tc_publish_account(p, &a), "account");
}

static void ib_link(tc_producer *p, uint64_t login, uint64_t ib) {
    tc_ib_link l;
    memset(&l, 0, sizeof l);
    l.login = login;
    l.ib = ib;
    l.op = TC_IB_LINK_SET;
    l.time_msc = T0 + 10;
    check(tc_publish_ib_link(p, &l), "ib_link");
}

static void tick(tc_producer *p, double bid, double ask, int64_t t) {
    tc_tick k;
    memset(&k, 0, sizeof k);
    SET(k.symbol, "EURUSD");
    k.bid = bid;
    k.ask = ask;
    k.digits = 5;
    k.datetime_msc = t;
    check(tc_publish_tick(p, &k), "tick");
}

static void deposit(tc_producer *p, uint64_t deal, double amount) {
    tc_deal d;
    memset(&d, 0, sizeof d);
    d.deal = deal;
    d.login = 500123;
    d.action = TC_DEAL_BALANCE;
    d.profit = amount;
    d.time_msc = T0 + 120000;
    SET(d.comment, "deposit");
    check(tc_publish_deal(p, &d), "deposit");
}

static int session(const char *url, const char *dir) {
    tc_producer *p = open_producer(url, dir);
    if (tc_abi_version() != TC_ABI_VERSION) {
        fprintf(stderr, "ABI version mismatch\n");
        return 1;
    }

    /* Static data first: the symbol, the accounts, the IB tree. */
    tc_symbol s;
    memset(&s, 0, sizeof s);
    SET(s.symbol, "EURUSD");
    SET(s.group, "forex");
    SET(s.base_ccy, "EUR");
    SET(s.profit_ccy, "USD");
    s.digits = 5;
    s.contract_size = 100000;
    check(tc_publish_symbol(p, &s), "symbol");

    account(p, 400001, "Top IB", 0.0);
    account(p, 400002, "Mid IB", 0.0);
    account(p, 400010, "Direct IB", 0.0);
    account(p, 500123, "Ada Lovelace", 10010.5);
    ib_link(p, 400002, 400001);
    ib_link(p, 400010, 400002);
    ib_link(p, 500123, 400010);
    tick(p, 1.08167, 1.08175, T0 + 20);

    /* OnOrderAdd: a buy limit. */
    tc_order o;
    memset(&o, 0, sizeof o);
    o.order = 88004321;
    o.login = 500123;
    o.op = TC_ORDER_ADD;
    o.order_type = 2; /* OP_BUY_LIMIT */
    o.state = 1;      /* ORDER_STATE_PLACED */
    o.type_fill = 2;  /* ORDER_FILL_RETURN */
    o.digits = 5;
    o.volume_initial = 150000;
    o.volume_current = 150000;
    o.price_order = 1.08175;
    o.time_setup_msc = T0 + 30;
    SET(o.symbol, "EURUSD");
    check(tc_publish_order(p, &o), "order add");

    /* It fills: OnDealAdd (in), OnPositionAdd, OnOrderDelete. */
    tc_deal in;
    memset(&in, 0, sizeof in);
    in.deal = 77001200;
    in.order = 88004321;
    in.position_id = 88004300;
    in.login = 500123;
    in.action = TC_DEAL_BUY;
    in.entry = TC_ENTRY_IN;
    in.digits = 5;
    in.volume = 150000;
    in.price = 1.08175;
    in.contract_size = 100000;
    in.commission = -10.5;
    in.rate_profit = 1.0;
    in.time_msc = T0 + 40;
    SET(in.symbol, "EURUSD");
    check(tc_publish_deal(p, &in), "deal in");

    tc_position pos;
    memset(&pos, 0, sizeof pos);
    pos.position_id = 88004300;
    pos.login = 500123;
    pos.op = TC_POSITION_OPEN;
    pos.action = TC_POSITION_BUY;
    pos.digits = 5;
    pos.volume = 150000;
    pos.price_open = 1.08175;
    pos.price_sl = 1.079;
    pos.price_tp = 1.09;
    pos.contract_size = 100000;
    pos.rate_profit = 1.0;
    pos.rate_margin = 1.08175;
    pos.time_create_msc = T0 + 41;
    SET(pos.symbol, "EURUSD");
    check(tc_publish_position(p, &pos), "position open");

    o.op = TC_ORDER_DELETE;
    o.state = 4; /* ORDER_STATE_FILLED */
    o.volume_current = 0;
    o.position_id = 88004300;
    o.time_done_msc = T0 + 42;
    check(tc_publish_order(p, &o), "order delete");

    /* OnPositionUpdate: the trader moves the stop loss. */
    pos.op = TC_POSITION_UPDATE;
    pos.price_sl = 1.0795;
    pos.time_update_msc = T0 + 60000;
    check(tc_publish_position(p, &pos), "position update");

    tick(p, 1.08420, 1.08428, T0 + 90000);

    /* The close: OnDealAdd (out, with the IB chain's amounts), OnPositionDelete. */
    tc_ib_commission chain[3] = {
        {400010, 1, 9.6},
        {400002, 2, 2.4},
        {400001, 3, 0.6},
    };
    tc_deal out;
    memset(&out, 0, sizeof out);
    out.deal = 77001234;
    out.order = 88004400;
    out.position_id = 88004300;
    out.login = 500123;
    out.action = TC_DEAL_SELL;
    out.entry = TC_ENTRY_OUT;
    out.digits = 5;
    out.volume = 150000;
    out.price = 1.0842;
    out.price_position = 1.08175;
    out.contract_size = 100000;
    out.profit = 367.5;
    out.rate_profit = 1.0;
    out.market_bid = 1.0842;
    out.market_ask = 1.08428;
    out.time_msc = T0 + 100000;
    SET(out.symbol, "EURUSD");
    SET(out.group, "real\\std-usd");
    out.ib_commissions = chain;
    out.ib_commissions_count = 3;
    check(tc_publish_deal(p, &out), "deal out");

    pos.op = TC_POSITION_CLOSE;
    pos.close_deal = 77001234;
    pos.profit = 367.5;
    pos.time_update_msc = T0 + 100001;
    check(tc_publish_position(p, &pos), "position close");

    /* IMTAccountSink::OnAccountMarginCallEnter. */
    tc_risk r;
    memset(&r, 0, sizeof r);
    r.login = 500123;
    r.op = TC_RISK_ENTER;
    r.equity = 310.2;
    r.margin = 324.5;
    r.margin_level = 95.6;
    r.threshold = 100;
    r.time_msc = T0 + 110000;
    check(tc_publish_margin_call(p, &r), "margin call");

    deposit(p, 77001300, 500.0);

    /* Refused synchronously, never queued. */
    tc_tick bad;
    memset(&bad, 0, sizeof bad);
    SET(bad.symbol, "EURUSD");
    bad.bid = 1.2;
    bad.ask = 1.1;
    if (tc_publish_tick(p, &bad) != TC_ERR_INVALID || strstr(tc_last_error(), "below bid") == NULL) {
        fprintf(stderr, "a tick with ask < bid was not refused: %s\n", tc_last_error());
        failures++;
    }
    if (tc_publish_deal(p, NULL) != TC_ERR_INVALID) {
        fprintf(stderr, "a NULL deal was not refused\n");
        failures++;
    }

    check(tc_producer_flush(p, 10000), "flush");
    tc_stats st;
    check(tc_producer_stats(p, &st), "stats");
    printf("published=%llu delivered=%llu next_seq=%llu next_tick_seq=%llu\n",
           (unsigned long long)st.published, (unsigned long long)st.delivered,
           (unsigned long long)st.next_seq, (unsigned long long)st.next_tick_seq);
    tc_producer_close(p);
    return failures == 0 ? 0 : 1;
}

/* Deposits 1..n of this run get deal tickets first_deal, first_deal + 1, ... */
static int crash(const char *url, const char *dir, int n) {
    tc_producer *p = open_producer(url, dir);
    for (int i = 0; i < n; i++) {
        deposit(p, 1000 + (uint64_t)i, 1.0);
    }
    /* Wait until the writer has put every event in the spool (Redis is down). */
    tc_stats st;
    for (int waited = 0; waited < 10000; waited += 10) {
        tc_producer_stats(p, &st);
        if (st.spooled >= (uint64_t)n) {
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("spooled=%llu next_seq=%llu\n", (unsigned long long)st.spooled,
           (unsigned long long)st.next_seq);
    fflush(stdout);
    if (st.spooled < (uint64_t)n || failures) {
        fprintf(stderr, "only %llu of %d events spooled\n", (unsigned long long)st.spooled, n);
        _exit(1);
    }
    _exit(0); /* a crash: no tc_producer_close, no clean-stop marker */
}

static int resume(const char *url, const char *dir, int n) {
    tc_producer *p = open_producer(url, dir);
    for (int i = 0; i < n; i++) {
        deposit(p, 2000 + (uint64_t)i, 1.0);
    }
    check(tc_producer_flush(p, 10000), "flush after restart");
    tc_stats st;
    tc_producer_stats(p, &st);
    printf("delivered=%llu next_seq=%llu\n", (unsigned long long)st.delivered,
           (unsigned long long)st.next_seq);
    tc_producer_close(p);
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s REDIS_URL SPOOL_DIR session|crash N|resume N\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *dir = argv[2], *mode = argv[3];
    int n = argc > 4 ? atoi(argv[4]) : 0;
    if (strcmp(mode, "session") == 0) return session(url, dir);
    if (strcmp(mode, "crash") == 0) return crash(url, dir, n);
    if (strcmp(mode, "resume") == 0) return resume(url, dir, n);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
