#include "registry/store/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>

#include "base/log.h"
#include "registry/store/codec.h"

namespace trellis::registry {

namespace {

template <class... Ts> struct Overloaded : Ts... { using Ts::operator()...; };
template <class... Ts> Overloaded(Ts...) -> Overloaded<Ts...>;

constexpr const char* kFormat = "trellis-registry";

// Tombstone kinds in the tombstones table.
enum TombKind : int { kTombNode = 0, kTombService = 1, kTombCheck = 2, kTombKv = 3 };

constexpr const char* kSchema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE nodes(name TEXT PRIMARY KEY, modify_index INTEGER NOT NULL, body TEXT NOT NULL)
  WITHOUT ROWID;
CREATE TABLE services(node TEXT NOT NULL, id TEXT NOT NULL, modify_index INTEGER NOT NULL,
  body TEXT NOT NULL, PRIMARY KEY(node, id)) WITHOUT ROWID;
CREATE TABLE checks(node TEXT NOT NULL, id TEXT NOT NULL, modify_index INTEGER NOT NULL,
  body TEXT NOT NULL, PRIMARY KEY(node, id)) WITHOUT ROWID;
CREATE TABLE kv(key BLOB PRIMARY KEY, create_index INTEGER NOT NULL,
  modify_index INTEGER NOT NULL, flags INTEGER NOT NULL, lock_index INTEGER NOT NULL,
  session TEXT NOT NULL, value BLOB NOT NULL);
CREATE TABLE tombstones(revision INTEGER NOT NULL, kind INTEGER NOT NULL, k1 BLOB NOT NULL,
  k2 BLOB NOT NULL);
CREATE INDEX tombstones_by_revision ON tombstones(revision);
)sql";

// A prepared statement; reset after each use.
class Stmt {
public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { finalize(); }

  void finalize() {
    sqlite3_finalize(s_);
    s_ = nullptr;
  }
  int prepare(sqlite3* db, const char* sql) {
    finalize();
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  }
  sqlite3_stmt* get() { return s_; }
  // Bound bytes are not copied: they must stay alive until the statement is reset.
  void text(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void blob(int i, std::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  // uint64 values are stored bit-cast into SQLite's signed 64-bit integers.
  void u64(int i, uint64_t v) { sqlite3_bind_int64(s_, i, static_cast<sqlite3_int64>(v)); }
  int step() { return sqlite3_step(s_); }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  uint64_t colU64(int i) { return static_cast<uint64_t>(sqlite3_column_int64(s_, i)); }
  std::string colBytes(int i) {
    const void* p = sqlite3_column_blob(s_, i);
    int n = sqlite3_column_bytes(s_, i);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }

private:
  sqlite3_stmt* s_ = nullptr;
};

// Runs one statement to completion, resetting it whatever happens.
int runStmt(Stmt& s) {
  int rc = s.step();
  s.reset();
  return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

} // namespace

struct SqliteStore::Impl {
  struct Commit {
    std::shared_ptr<const Batch> batch;
    CommitCallback done;
  };
  using Job = std::variant<Commit, std::function<void()>>;

  class Watch;
  struct Watcher {
    std::recursive_mutex mu; // held while delivering; the handle's destructor waits on it
    ChangeCallback cb;
    bool active = true;
  };

  SqliteStoreSettings settings;
  sqlite3* db = nullptr;

  Stmt put_node, del_node, put_service, del_service, put_check, del_check, put_kv, del_kv, kv_index,
      add_tomb, set_meta, prune_tombs;

  std::thread thread;
  mutable std::mutex mu;
  std::condition_variable cv;      // work queued, or stopping
  std::condition_variable done_cv; // a job completed
  std::deque<Job> queue;
  size_t queued_commits = 0;
  bool stopping = false;
  uint64_t submitted = 0; // jobs ever queued
  uint64_t completed = 0; // jobs ever completed
  StoreStats stats;

  // Committer-thread state.
  std::atomic<uint64_t> revision{0};
  uint64_t compacted = 0;
  std::optional<Error> broken;
  std::vector<std::shared_ptr<Watcher>> watchers;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    if (thread.joinable())
      thread.join();
    // Finalize every statement before closing, or sqlite3_close reports SQLITE_BUSY.
    for (Stmt* s : {&put_node, &del_node, &put_service, &del_service, &put_check, &del_check,
                    &put_kv, &del_kv, &kv_index, &add_tomb, &set_meta, &prune_tombs})
      s->finalize();
    if (db != nullptr && sqlite3_close(db) != SQLITE_OK)
      TLOG_ERROR("registry store {}: close failed: {}", settings.path, sqlite3_errmsg(db));
  }

  Error sqlError(int rc, std::string_view what) const {
    std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    ErrorCode code = ErrorCode::kIo;
    int primary = rc & 0xff;
    std::string hint;
    if (primary == SQLITE_NOTADB) {
      hint = ": the file is not a database or is damaged";
    } else if (primary == SQLITE_CORRUPT) {
      hint = ": the database is damaged";
    } else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
      code = ErrorCode::kUnavailable;
      hint = ": the database is locked by another process (is another trellis server using it?)";
    } else if (primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY || primary == SQLITE_PERM) {
      hint = ": cannot open it for writing (check the path and its permissions)";
    } else if (primary == SQLITE_FULL) {
      hint = ": the disk is full";
    }
    return makeError(code, "registry store {}: {}: {} ({}){}", settings.path, what, detail,
                     sqlite3_errstr(rc), hint);
  }

  int exec(const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

  // --- open ---

  Status openDb() {
    int rc =
        sqlite3_open_v2(settings.path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK)
      return sqlError(rc, "open");
    sqlite3_extended_result_codes(db, 1);
    // Exclusive locking: one server per database, and the WAL index lives in heap memory
    // (no -shm file). Must precede the switch to WAL.
    if ((rc = exec("PRAGMA locking_mode=EXCLUSIVE")) != SQLITE_OK)
      return sqlError(rc, "set locking_mode");
    Stmt jm;
    if ((rc = jm.prepare(db, "PRAGMA journal_mode=WAL")) != SQLITE_OK)
      return sqlError(rc, "set journal_mode=WAL");
    rc = jm.step();
    if (rc != SQLITE_ROW)
      return sqlError(rc, "set journal_mode=WAL");
    std::string mode = jm.colBytes(0);
    jm.reset();
    if (mode != "wal")
      return makeError(ErrorCode::kIo, "registry store {}: journal mode is \"{}\", not wal",
                       settings.path, mode);
    // FULL: every COMMIT fsyncs the WAL before returning; see the class comment.
    if ((rc = exec("PRAGMA synchronous=FULL")) != SQLITE_OK)
      return sqlError(rc, "set synchronous=FULL");
    const std::string cache =
        fmt::format("PRAGMA cache_size=-{}", std::max<size_t>(settings.cache_size_kib, 64));
    if ((rc = exec(cache.c_str())) != SQLITE_OK)
      return sqlError(rc, "set cache_size");
    TRELLIS_RETURN_IF_ERROR(initSchema());
    if (settings.verify_on_open)
      TRELLIS_RETURN_IF_ERROR(quickCheck());
    TRELLIS_RETURN_IF_ERROR(readMeta());
    return prepareStatements();
  }

  Status initSchema() {
    int rc = exec("BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
      return sqlError(rc, "lock the database");
    Status st = initSchemaLocked();
    if (!st.ok()) {
      exec("ROLLBACK");
      return st;
    }
    if ((rc = exec("COMMIT")) != SQLITE_OK) {
      exec("ROLLBACK");
      return sqlError(rc, "create the schema");
    }
    return okStatus();
  }

  Status initSchemaLocked() {
    Stmt q;
    int rc = q.prepare(db, "SELECT name FROM sqlite_master WHERE type='table'");
    if (rc != SQLITE_OK)
      return sqlError(rc, "read the schema");
    std::vector<std::string> tables;
    while ((rc = q.step()) == SQLITE_ROW)
      tables.push_back(q.colBytes(0));
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read the schema");
    if (tables.empty()) {
      if ((rc = exec(kSchema)) != SQLITE_OK)
        return sqlError(rc, "create the schema");
      std::string meta = fmt::format("INSERT INTO meta(key, value) VALUES ('format', '{}'), "
                                     "('schema_version', {}), ('revision', 0), "
                                     "('compacted_revision', 0)",
                                     kFormat, kSchemaVersion);
      if ((rc = exec(meta.c_str())) != SQLITE_OK)
        return sqlError(rc, "write the schema version");
      return okStatus();
    }
    if (std::find(tables.begin(), tables.end(), "meta") == tables.end())
      return makeError(ErrorCode::kFailedPrecondition,
                       "registry store {}: not a Trellis registry database (it has tables but "
                       "no meta table)",
                       settings.path);
    std::string format = metaValue("format").valueOr("");
    if (format != kFormat)
      return makeError(ErrorCode::kFailedPrecondition,
                       "registry store {}: not a Trellis registry database (format \"{}\")",
                       settings.path, format);
    auto version = metaValue("schema_version");
    if (!version.ok())
      return version.error();
    int v = std::atoi(version->c_str());
    if (v > kSchemaVersion)
      return makeError(ErrorCode::kFailedPrecondition,
                       "registry store {}: schema version {} is newer than this binary "
                       "supports ({}); upgrade trellis or restore an older database",
                       settings.path, v, kSchemaVersion);
    if (v < 1)
      return makeError(ErrorCode::kFailedPrecondition,
                       "registry store {}: bad schema version \"{}\"", settings.path, *version);
    // Version 1 is the only one so far; later versions migrate here, in this transaction.
    return okStatus();
  }

  Result<std::string> metaValue(const char* key) {
    Stmt q;
    int rc = q.prepare(db, "SELECT value FROM meta WHERE key = ?");
    if (rc != SQLITE_OK)
      return sqlError(rc, "read meta");
    q.text(1, key);
    rc = q.step();
    if (rc == SQLITE_DONE)
      return makeError(ErrorCode::kFailedPrecondition, "registry store {}: meta \"{}\" missing",
                       settings.path, key);
    if (rc != SQLITE_ROW)
      return sqlError(rc, "read meta");
    return q.colBytes(0);
  }

  Status quickCheck() {
    Stmt q;
    int rc = q.prepare(db, "PRAGMA quick_check(5)");
    if (rc != SQLITE_OK)
      return sqlError(rc, "verify the database");
    std::string problems;
    while ((rc = q.step()) == SQLITE_ROW) {
      std::string line = q.colBytes(0);
      if (line != "ok")
        problems += (problems.empty() ? "" : "; ") + line;
    }
    if (rc != SQLITE_DONE)
      return sqlError(rc, "verify the database");
    if (!problems.empty())
      return makeError(ErrorCode::kIo, "registry store {}: the database is damaged: {}",
                       settings.path, problems);
    return okStatus();
  }

  Status readMeta() {
    auto rev = metaValue("revision");
    if (!rev.ok())
      return rev.error();
    auto comp = metaValue("compacted_revision");
    if (!comp.ok())
      return comp.error();
    revision = std::strtoull(rev->c_str(), nullptr, 10);
    compacted = std::strtoull(comp->c_str(), nullptr, 10);
    return okStatus();
  }

  Status prepareStatements() {
    struct {
      Stmt* s;
      const char* sql;
    } all[] = {
        {&put_node, "INSERT OR REPLACE INTO nodes(name, modify_index, body) VALUES (?, ?, ?)"},
        {&del_node, "DELETE FROM nodes WHERE name = ?"},
        {&put_service, "INSERT OR REPLACE INTO services(node, id, modify_index, body) "
                       "VALUES (?, ?, ?, ?)"},
        {&del_service, "DELETE FROM services WHERE node = ? AND id = ?"},
        {&put_check, "INSERT OR REPLACE INTO checks(node, id, modify_index, body) "
                     "VALUES (?, ?, ?, ?)"},
        {&del_check, "DELETE FROM checks WHERE node = ? AND id = ?"},
        {&put_kv, "INSERT OR REPLACE INTO kv(key, create_index, modify_index, flags, "
                  "lock_index, session, value) VALUES (?, ?, ?, ?, ?, ?, ?)"},
        {&del_kv, "DELETE FROM kv WHERE key = ?"},
        {&kv_index, "SELECT modify_index FROM kv WHERE key = ?"},
        {&add_tomb, "INSERT INTO tombstones(revision, kind, k1, k2) VALUES (?, ?, ?, ?)"},
        {&set_meta, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)"},
        {&prune_tombs, "DELETE FROM tombstones WHERE revision <= ?"},
    };
    for (auto& [s, sql] : all) {
      int rc = s->prepare(db, sql);
      if (rc != SQLITE_OK)
        return sqlError(rc, "prepare statements");
    }
    return okStatus();
  }

  // --- committer thread ---

  void run() {
    for (;;) {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty())
        return; // stopping, and everything queued is done
      if (auto* read = std::get_if<std::function<void()>>(&queue.front())) {
        auto fn = std::move(*read);
        queue.pop_front();
        lock.unlock();
        fn();
        lock.lock();
        ++completed;
        done_cv.notify_all();
        continue;
      }
      // Group commit: take every commit queued behind the first, up to the mutation budget.
      std::vector<Commit> group;
      size_t mutations = 0;
      while (!queue.empty() && std::holds_alternative<Commit>(queue.front())) {
        Commit& c = std::get<Commit>(queue.front());
        if (!group.empty() && mutations + c.batch->mutations.size() > settings.max_group_mutations)
          break;
        mutations += c.batch->mutations.size();
        group.push_back(std::move(c));
        queue.pop_front();
        --queued_commits;
      }
      lock.unlock();
      commitGroup(group);
      lock.lock();
      completed += group.size();
      done_cv.notify_all();
    }
  }

  Status tombstone(uint64_t rev, int kind, std::string_view k1, std::string_view k2) {
    add_tomb.u64(1, rev);
    sqlite3_bind_int(add_tomb.get(), 2, kind);
    add_tomb.blob(3, k1);
    add_tomb.blob(4, k2);
    int rc = runStmt(add_tomb);
    return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write a tombstone"));
  }

  Result<uint64_t> currentKvIndex(const std::string& key) {
    kv_index.blob(1, key);
    int rc = kv_index.step();
    uint64_t idx = 0;
    if (rc == SQLITE_ROW)
      idx = kv_index.colU64(0);
    kv_index.reset();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return sqlError(rc, "read a KV index");
    return idx;
  }

  Status applyBatch(const Batch& b, uint64_t rev) {
    if (b.base_revision != rev)
      return makeError(ErrorCode::kFailedPrecondition,
                       "batch is based on revision {} but the store is at revision {}",
                       b.base_revision, rev);
    if (b.revision < b.base_revision)
      return makeError(ErrorCode::kInvalidArgument, "batch revision {} is below its base {}",
                       b.revision, b.base_revision);
    for (const Mutation& m : b.mutations) {
      Status st = std::visit(
          Overloaded{
              [&](const NodePut& x) -> Status {
                const std::string k = foldName(x.node->name);
                const std::string body = codec::encodeNode(*x.node);
                put_node.text(1, k);
                put_node.u64(2, x.node->modify_index);
                put_node.text(3, body);
                int rc = runStmt(put_node);
                return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write a node"));
              },
              [&](const NodeDelete& x) -> Status {
                const std::string k = foldName(x.node);
                del_node.text(1, k);
                int rc = runStmt(del_node);
                if (rc != SQLITE_DONE)
                  return sqlError(rc, "delete a node");
                return tombstone(x.index, kTombNode, k, "");
              },
              [&](const ServicePut& x) -> Status {
                const std::string n = foldName(x.service->node), i = foldName(x.service->id);
                const std::string body = codec::encodeService(*x.service);
                put_service.text(1, n);
                put_service.text(2, i);
                put_service.u64(3, x.service->modify_index);
                put_service.text(4, body);
                int rc = runStmt(put_service);
                return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write a service"));
              },
              [&](const ServiceDelete& x) -> Status {
                const std::string n = foldName(x.node), i = foldName(x.id);
                del_service.text(1, n);
                del_service.text(2, i);
                int rc = runStmt(del_service);
                if (rc != SQLITE_DONE)
                  return sqlError(rc, "delete a service");
                return tombstone(x.index, kTombService, n, i);
              },
              [&](const CheckPut& x) -> Status {
                const std::string n = foldName(x.check->node), i = foldName(x.check->id);
                const std::string body = codec::encodeCheck(*x.check);
                put_check.text(1, n);
                put_check.text(2, i);
                put_check.u64(3, x.check->modify_index);
                put_check.text(4, body);
                int rc = runStmt(put_check);
                return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write a check"));
              },
              [&](const CheckDelete& x) -> Status {
                const std::string n = foldName(x.node), i = foldName(x.id);
                del_check.text(1, n);
                del_check.text(2, i);
                int rc = runStmt(del_check);
                if (rc != SQLITE_DONE)
                  return sqlError(rc, "delete a check");
                return tombstone(x.index, kTombCheck, n, i);
              },
              [&](const KvPut& x) -> Status {
                const KvEntry& e = *x.entry;
                if (x.expect_modify_index) {
                  auto cur = currentKvIndex(e.key);
                  if (!cur.ok())
                    return cur.error();
                  if (*cur != *x.expect_modify_index)
                    return makeError(ErrorCode::kFailedPrecondition,
                                     "KV precondition failed: key \"{}\" has ModifyIndex {}, "
                                     "expected {}",
                                     e.key, *cur, *x.expect_modify_index);
                }
                put_kv.blob(1, e.key);
                put_kv.u64(2, e.create_index);
                put_kv.u64(3, e.modify_index);
                put_kv.u64(4, e.flags);
                put_kv.u64(5, e.lock_index);
                put_kv.text(6, e.session);
                put_kv.blob(7, e.value);
                int rc = runStmt(put_kv);
                return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write a KV entry"));
              },
              [&](const KvDelete& x) -> Status {
                if (x.expect_modify_index) {
                  auto cur = currentKvIndex(x.key);
                  if (!cur.ok())
                    return cur.error();
                  if (*cur != 0 && *cur != *x.expect_modify_index)
                    return makeError(ErrorCode::kFailedPrecondition,
                                     "KV precondition failed: key \"{}\" has ModifyIndex {}, "
                                     "expected {}",
                                     x.key, *cur, *x.expect_modify_index);
                }
                del_kv.blob(1, x.key);
                int rc = runStmt(del_kv);
                if (rc != SQLITE_DONE)
                  return sqlError(rc, "delete a KV entry");
                return tombstone(x.index, kTombKv, x.key, "");
              },
          },
          m);
      if (!st.ok())
        return st;
    }
    return okStatus();
  }

  Status setMeta(const char* key, uint64_t value) {
    set_meta.text(1, key);
    set_meta.u64(2, value);
    int rc = runStmt(set_meta);
    return rc == SQLITE_DONE ? okStatus() : Status(sqlError(rc, "write meta"));
  }

  // Drops delete history older than the retention, inside the group's transaction. It runs
  // once history spans twice the retention, so its cost is amortised over `retention` writes.
  Status maybePrune(uint64_t rev, uint64_t* new_compacted) {
    *new_compacted = compacted;
    const uint64_t keep = std::max<uint64_t>(settings.tombstone_retention, 1);
    if (rev <= keep)
      return okStatus();
    const uint64_t cutoff = rev - keep;
    if (cutoff - compacted < keep)
      return okStatus();
    prune_tombs.u64(1, cutoff);
    int rc = runStmt(prune_tombs);
    if (rc != SQLITE_DONE)
      return sqlError(rc, "compact tombstones");
    TRELLIS_RETURN_IF_ERROR(setMeta("compacted_revision", cutoff));
    *new_compacted = cutoff;
    return okStatus();
  }

  void commitGroup(std::vector<Commit>& group) {
    std::vector<Status> results(group.size());
    auto failAll = [&](const Error& e) {
      for (auto& r : results)
        r = e;
    };
    uint64_t rev = revision.load();
    uint64_t new_compacted = compacted;
    bool any_ok = false;
    if (broken) {
      failAll(*broken);
    } else if (int rc = exec("BEGIN IMMEDIATE"); rc != SQLITE_OK) {
      failAll(sqlError(rc, "begin a transaction"));
    } else {
      bool txn_lost = false;
      for (size_t i = 0; i < group.size(); ++i) {
        exec("SAVEPOINT batch");
        Status st = applyBatch(*group[i].batch, rev);
        if (st.ok()) {
          exec("RELEASE batch");
          rev = group[i].batch->revision;
          any_ok = true;
          continue;
        }
        results[i] = st;
        if (sqlite3_get_autocommit(db)) {
          // SQLite rolled the whole transaction back (I/O error, disk full): nothing of the
          // group is applied.
          txn_lost = true;
          Error e = st.error().withContext("transaction rolled back");
          for (size_t j = 0; j < group.size(); ++j)
            if (j != i)
              results[j] = e;
          break;
        }
        exec("ROLLBACK TO batch");
        exec("RELEASE batch");
      }
      if (!txn_lost) {
        Status st;
        if (any_ok)
          st = setMeta("revision", rev);
        if (st.ok() && any_ok)
          st = maybePrune(rev, &new_compacted);
        int rc = st.ok() ? exec("COMMIT") : SQLITE_ERROR;
        if (rc != SQLITE_OK) {
          Error e = st.ok() ? sqlError(rc, "commit") : st.error();
          exec("ROLLBACK");
          if (st.ok()) {
            // Whether a failed COMMIT reached the disk is unknown (a failed fsync may or may
            // not have persisted the WAL frames): stop writing until a reopen reads the truth.
            broken = makeError(ErrorCode::kUnavailable,
                               "{}; the store refuses writes until it is reopened", e.message());
            TLOG_ERROR("{}", broken->message());
          }
          for (auto& r : results)
            if (r.ok())
              r = e;
          any_ok = false;
        }
      }
    }
    if (any_ok) {
      revision = rev;
      compacted = new_compacted;
    }
    std::vector<std::shared_ptr<Watcher>> live;
    {
      std::lock_guard<std::mutex> lock(mu);
      bool counted = false;
      for (size_t i = 0; i < group.size(); ++i) {
        if (results[i].ok()) {
          ++stats.batches_committed;
          stats.mutations += group[i].batch->mutations.size();
          if (!counted)
            ++stats.transactions;
          counted = true;
        } else {
          ++stats.batches_failed;
        }
      }
      stats.revision = revision;
    }
    std::erase_if(watchers, [](const auto& w) {
      std::lock_guard<std::recursive_mutex> l(w->mu);
      return !w->active;
    });
    for (size_t i = 0; i < group.size(); ++i) {
      if (!results[i].ok())
        continue;
      const Batch& b = *group[i].batch;
      ChangeSet cs{b.base_revision, b.revision, b.mutations};
      for (const auto& w : watchers) {
        std::lock_guard<std::recursive_mutex> l(w->mu);
        if (w->active)
          w->cb(cs);
      }
    }
    for (size_t i = 0; i < group.size(); ++i)
      group[i].done(std::move(results[i]));
  }

  // Runs `fn` on the committer thread and waits for it.
  template <typename T> T onCommitter(std::function<T()> fn) {
    std::packaged_task<T()> task(std::move(fn));
    auto fut = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.emplace_back(std::function<void()>([&task] { task(); }));
      ++submitted;
    }
    cv.notify_one();
    return fut.get();
  }

  // --- reads (committer thread) ---

  Result<StoreSnapshot> loadNow() {
    StoreSnapshot snap;
    snap.revision = revision;
    Stmt q;
    int rc;
    auto rowError = [&](std::string_view table, std::string_view key, const Error& e) {
      return makeError(ErrorCode::kIo, "registry store {}: {} row \"{}\": {}", settings.path, table,
                       key, e.message());
    };
    if ((rc = q.prepare(db, "SELECT name, body FROM nodes")) != SQLITE_OK)
      return sqlError(rc, "read nodes");
    while ((rc = q.step()) == SQLITE_ROW) {
      std::string key = q.colBytes(0);
      auto n = codec::decodeNode(q.colBytes(1));
      if (!n.ok())
        return rowError("nodes", key, n.error());
      if (foldName((*n)->name) != key)
        return rowError("nodes", key, Error(ErrorCode::kIo, "key does not match the body"));
      snap.nodes.push_back(std::move(*n));
    }
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read nodes");
    if ((rc = q.prepare(db, "SELECT node, id, body FROM services")) != SQLITE_OK)
      return sqlError(rc, "read services");
    while ((rc = q.step()) == SQLITE_ROW) {
      std::string key = q.colBytes(0) + "/" + q.colBytes(1);
      auto s = codec::decodeService(q.colBytes(2));
      if (!s.ok())
        return rowError("services", key, s.error());
      if (foldName((*s)->node) + "/" + foldName((*s)->id) != key)
        return rowError("services", key, Error(ErrorCode::kIo, "key does not match the body"));
      snap.services.push_back(std::move(*s));
    }
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read services");
    if ((rc = q.prepare(db, "SELECT node, id, body FROM checks")) != SQLITE_OK)
      return sqlError(rc, "read checks");
    while ((rc = q.step()) == SQLITE_ROW) {
      std::string key = q.colBytes(0) + "/" + q.colBytes(1);
      auto c = codec::decodeCheck(q.colBytes(2));
      if (!c.ok())
        return rowError("checks", key, c.error());
      if (foldName((*c)->node) + "/" + foldName((*c)->id) != key)
        return rowError("checks", key, Error(ErrorCode::kIo, "key does not match the body"));
      snap.checks.push_back(std::move(*c));
    }
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read checks");
    if ((rc = q.prepare(db, "SELECT key, create_index, modify_index, flags, lock_index, "
                            "session, value FROM kv")) != SQLITE_OK)
      return sqlError(rc, "read kv");
    while ((rc = q.step()) == SQLITE_ROW)
      snap.kv.push_back(kvFromRow(q));
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read kv");
    return snap;
  }

  static KvPtr kvFromRow(Stmt& q) {
    auto e = std::make_shared<KvEntry>();
    e->key = q.colBytes(0);
    e->create_index = q.colU64(1);
    e->modify_index = q.colU64(2);
    e->flags = q.colU64(3);
    e->lock_index = q.colU64(4);
    e->session = q.colBytes(5);
    e->value = q.colBytes(6);
    return e;
  }

  Result<ChangeSet> changesNow(uint64_t since) {
    const uint64_t rev = revision;
    if (since > rev)
      return makeError(ErrorCode::kInvalidArgument,
                       "revision {} is ahead of the store (at revision {})", since, rev);
    if (since < compacted)
      return makeError(ErrorCode::kFailedPrecondition,
                       "revision {} is compacted; the oldest revision with history is {}", since,
                       compacted);
    ChangeSet cs;
    cs.from_revision = since;
    cs.revision = rev;
    if (since == rev)
      return cs;
    // A net diff: deletes first (children before parents), then puts (parents first).
    Stmt q;
    int rc = q.prepare(db, "SELECT revision, kind, k1, k2 FROM tombstones WHERE revision > ? "
                           "ORDER BY kind DESC, revision");
    if (rc != SQLITE_OK)
      return sqlError(rc, "read tombstones");
    q.u64(1, since);
    std::vector<Mutation> kv_deletes;
    while ((rc = q.step()) == SQLITE_ROW) {
      uint64_t r = q.colU64(0);
      int kind = sqlite3_column_int(q.get(), 1);
      std::string k1 = q.colBytes(2), k2 = q.colBytes(3);
      switch (kind) {
      case kTombNode:
        cs.mutations.push_back(NodeDelete{k1, r});
        break;
      case kTombService:
        cs.mutations.push_back(ServiceDelete{k1, k2, r});
        break;
      case kTombCheck:
        cs.mutations.push_back(CheckDelete{k1, k2, r});
        break;
      case kTombKv:
        kv_deletes.push_back(KvDelete{k1, r, std::nullopt});
        break;
      default:
        return makeError(ErrorCode::kIo, "registry store {}: tombstone of unknown kind {}",
                         settings.path, kind);
      }
    }
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read tombstones");
    // kind DESC put KV deletes first; catalog deletes were pushed in check, service, node
    // order already. KV deletes go last among deletes for readability.
    for (auto& m : kv_deletes)
      cs.mutations.push_back(std::move(m));

    auto readPuts = [&](const char* sql, auto decode, auto wrap) -> Status {
      Stmt p;
      int prc = p.prepare(db, sql);
      if (prc != SQLITE_OK)
        return sqlError(prc, "read changes");
      p.u64(1, since);
      while ((prc = p.step()) == SQLITE_ROW) {
        auto v = decode(p.colBytes(0));
        if (!v.ok())
          return v.error();
        cs.mutations.push_back(wrap(std::move(*v)));
      }
      return prc == SQLITE_DONE ? okStatus() : Status(sqlError(prc, "read changes"));
    };
    TRELLIS_RETURN_IF_ERROR(readPuts("SELECT body FROM nodes WHERE modify_index > ?",
                                     codec::decodeNode,
                                     [](NodePtr n) -> Mutation { return NodePut{std::move(n)}; }));
    TRELLIS_RETURN_IF_ERROR(
        readPuts("SELECT body FROM services WHERE modify_index > ?", codec::decodeService,
                 [](ServicePtr s) -> Mutation { return ServicePut{std::move(s)}; }));
    TRELLIS_RETURN_IF_ERROR(
        readPuts("SELECT body FROM checks WHERE modify_index > ?", codec::decodeCheck,
                 [](CheckPtr c) -> Mutation { return CheckPut{std::move(c)}; }));
    Stmt k;
    if ((rc = k.prepare(db, "SELECT key, create_index, modify_index, flags, lock_index, session, "
                            "value FROM kv WHERE modify_index > ?")) != SQLITE_OK)
      return sqlError(rc, "read changes");
    k.u64(1, since);
    while ((rc = k.step()) == SQLITE_ROW)
      cs.mutations.push_back(KvPut{kvFromRow(k), std::nullopt});
    if (rc != SQLITE_DONE)
      return sqlError(rc, "read changes");
    return cs;
  }
};

class SqliteStore::Impl::Watch final : public StoreWatch {
public:
  explicit Watch(std::shared_ptr<Watcher> w) : w_(std::move(w)) {}
  ~Watch() override {
    std::lock_guard<std::recursive_mutex> lock(w_->mu);
    w_->active = false;
  }

private:
  std::shared_ptr<Watcher> w_;
};

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(SqliteStoreSettings settings) {
  if (settings.path.empty())
    return makeError(ErrorCode::kInvalidArgument, "registry store: path is empty");
  if (settings.max_group_mutations == 0 || settings.max_queued_batches == 0)
    return makeError(ErrorCode::kInvalidArgument,
                     "registry store: max_group_mutations and max_queued_batches must be > 0");
  auto impl = std::make_unique<Impl>();
  impl->settings = std::move(settings);
  Status st = impl->openDb();
  if (!st.ok())
    return st.error();
  Impl* raw = impl.get();
  impl->stats.revision = impl->revision;
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

const SqliteStoreSettings& SqliteStore::settings() const {
  return impl_->settings;
}

Result<StoreSnapshot> SqliteStore::load() {
  return impl_->onCommitter<Result<StoreSnapshot>>([this] { return impl_->loadNow(); });
}

void SqliteStore::commit(std::shared_ptr<const Batch> batch, CommitCallback done) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->queued_commits < impl_->settings.max_queued_batches) {
      impl_->queue.emplace_back(Impl::Commit{std::move(batch), std::move(done)});
      ++impl_->queued_commits;
      ++impl_->submitted;
      done = nullptr;
    }
  }
  if (done) {
    done(makeError(ErrorCode::kResourceExhausted,
                   "registry store: {} batches already wait for the disk (max_queued_batches)",
                   impl_->settings.max_queued_batches));
    return;
  }
  impl_->cv.notify_one();
}

uint64_t SqliteStore::revision() const {
  return impl_->revision.load();
}

Result<ChangeSet> SqliteStore::changesSince(uint64_t revision) {
  return impl_->onCommitter<Result<ChangeSet>>(
      [this, revision] { return impl_->changesNow(revision); });
}

Result<std::unique_ptr<StoreWatch>> SqliteStore::watch(uint64_t revision, ChangeCallback cb) {
  auto w = std::make_shared<Impl::Watcher>();
  w->cb = std::move(cb);
  // Backlog and registration run as one job on the committer thread, so no commit can fall
  // between them.
  Status st = impl_->onCommitter<Status>([this, w, revision]() -> Status {
    auto backlog = impl_->changesNow(revision);
    if (!backlog.ok())
      return backlog.error();
    if (!backlog->mutations.empty())
      w->cb(*backlog);
    impl_->watchers.push_back(w);
    return okStatus();
  });
  if (!st.ok())
    return st.error();
  return std::unique_ptr<StoreWatch>(std::make_unique<Impl::Watch>(w));
}

void SqliteStore::flush() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  const uint64_t target = impl_->submitted;
  impl_->done_cv.wait(lock, [&] { return impl_->completed >= target; });
}

StoreStats SqliteStore::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

} // namespace trellis::registry
