#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "registry/catalog.h"
#include "registry/store/memory_store.h"
#include "registry/store/sqlite_store.h"
#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "trellis-registry-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
  fs::path path_;
};

// Produces batches the way the registry does: a catalog evaluates requests into a batch and
// applies it, so consecutive batches chain revisions.
class BatchMaker {
public:
  std::shared_ptr<const Batch> make(const WriteRequest& req) {
    PreparedBatch p = catalog.prepare({&req});
    EXPECT_TRUE(p.results[0].ok()) << p.results[0].error().message();
    catalog.commit(p.batch);
    return std::make_shared<const Batch>(std::move(p.batch));
  }
  Catalog catalog;
};

Status commitSync(Store& store, std::shared_ptr<const Batch> b) {
  std::promise<Status> done;
  auto fut = done.get_future();
  store.commit(std::move(b), [&done](Status st) { done.set_value(std::move(st)); });
  return fut.get();
}

// A plain model of stored state, to check that ChangeSets replay into what load() returns.
struct Model {
  std::map<std::string, std::string> objects; // kind/key -> encoded-ish content
  void apply(const Mutation& m) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, NodePut>)
            objects["node/" + foldName(x.node->name)] = x.node->address;
          else if constexpr (std::is_same_v<T, NodeDelete>)
            objects.erase("node/" + foldName(x.node));
          else if constexpr (std::is_same_v<T, ServicePut>)
            objects["svc/" + foldName(x.service->node) + "/" + foldName(x.service->id)] =
                std::to_string(x.service->port);
          else if constexpr (std::is_same_v<T, ServiceDelete>)
            objects.erase("svc/" + foldName(x.node) + "/" + foldName(x.id));
          else if constexpr (std::is_same_v<T, CheckPut>)
            objects["chk/" + foldName(x.check->node) + "/" + foldName(x.check->id)] =
                std::string(checkStatusName(x.check->status));
          else if constexpr (std::is_same_v<T, CheckDelete>)
            objects.erase("chk/" + foldName(x.node) + "/" + foldName(x.id));
          else if constexpr (std::is_same_v<T, KvPut>)
            objects["kv/" + x.entry->key] = x.entry->value;
          else if constexpr (std::is_same_v<T, KvDelete>)
            objects.erase("kv/" + x.key);
        },
        m);
  }
  static Model of(const StoreSnapshot& s) {
    Model m;
    for (const auto& n : s.nodes)
      m.apply(NodePut{n});
    for (const auto& x : s.services)
      m.apply(ServicePut{x});
    for (const auto& x : s.checks)
      m.apply(CheckPut{x});
    for (const auto& x : s.kv)
      m.apply(KvPut{x, std::nullopt});
    return m;
  }
};

// --- Semantics every store shares -----------------------------------------------------------

class StoreFactory {
public:
  virtual ~StoreFactory() = default;
  virtual std::unique_ptr<Store> make() = 0;
};

class MemoryFactory : public StoreFactory {
public:
  std::unique_ptr<Store> make() override { return std::make_unique<MemoryStore>(); }
};

class SqliteFactory : public StoreFactory {
public:
  std::unique_ptr<Store> make() override {
    auto s = SqliteStore::open(SqliteStoreSettings{dir_.file("registry.db")});
    EXPECT_TRUE(s.ok()) << s.error().message();
    return std::move(s).value();
  }

private:
  TempDir dir_;
};

template <typename F> class StoreContractTest : public ::testing::Test {
protected:
  F factory_;
};
using Factories = ::testing::Types<MemoryFactory, SqliteFactory>;
TYPED_TEST_SUITE(StoreContractTest, Factories);

TYPED_TEST(StoreContractTest, CommitThenLoad) {
  auto store = this->factory_.make();
  BatchMaker bm;
  ASSERT_TRUE(
      commitSync(*store,
                 bm.make(reg(node("n1"), service("web", "w1", 80, {"a"}),
                             {httpCheck("h", "http://10.0.0.1/", std::chrono::seconds(5), "w1")})))
          .ok());
  ASSERT_TRUE(
      commitSync(*store, bm.make(KvPutRequest{"k", std::string("v\0w", 3), 7, std::nullopt})).ok());
  EXPECT_EQ(store->revision(), 2u);
  auto snap = store->load();
  ASSERT_TRUE(snap.ok()) << snap.error().message();
  EXPECT_EQ(snap->revision, 2u);
  ASSERT_EQ(snap->nodes.size(), 1u);
  ASSERT_EQ(snap->services.size(), 1u);
  EXPECT_EQ(snap->services[0]->tags, std::vector<std::string>{"a"});
  ASSERT_EQ(snap->checks.size(), 1u);
  EXPECT_EQ(snap->checks[0]->definition.http, "http://10.0.0.1/");
  EXPECT_EQ(snap->checks[0]->definition.interval, std::chrono::seconds(5));
  ASSERT_EQ(snap->kv.size(), 1u);
  EXPECT_EQ(snap->kv[0]->value, std::string("v\0w", 3));
  EXPECT_EQ(snap->kv[0]->flags, 7u);
  // The snapshot rebuilds an identical catalog.
  Catalog c;
  ASSERT_TRUE(c.restore(*snap).ok());
  EXPECT_TRUE(sameContent(*c.check("n1", "h"), *bm.catalog.check("n1", "h")));
  EXPECT_TRUE(sameContent(*c.service("n1", "w1"), *bm.catalog.service("n1", "w1")));
}

TYPED_TEST(StoreContractTest, RejectsABatchBasedOnAnotherRevision) {
  auto store = this->factory_.make();
  BatchMaker bm;
  ASSERT_TRUE(commitSync(*store, bm.make(reg(node("n1")))).ok());
  auto stale = std::make_shared<Batch>(*bm.make(reg(node("n2"))));
  stale->base_revision = 0;
  Status st = commitSync(*store, stale);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(store->revision(), 1u);
  EXPECT_EQ(store->load()->nodes.size(), 1u);
  EXPECT_EQ(store->stats().batches_failed, 1u);
}

TYPED_TEST(StoreContractTest, KvPreconditionsAreCheckedAtomically) {
  auto store = this->factory_.make();
  BatchMaker bm;
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"lock", "a", 0, std::nullopt})).ok());
  // A batch whose CAS is stale (another server won the race): nothing of it may land.
  auto b = std::make_shared<Batch>();
  b->base_revision = 1;
  b->revision = 2;
  auto n = std::make_shared<Node>(node("n9"));
  n->create_index = n->modify_index = 2;
  b->mutations.push_back(NodePut{n});
  auto e = std::make_shared<KvEntry>();
  e->key = "lock";
  e->value = "b";
  e->create_index = e->modify_index = 2;
  b->mutations.push_back(KvPut{e, 0}); // create-only, but it exists
  Status st = commitSync(*store, b);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kFailedPrecondition);
  auto snap = store->load();
  EXPECT_TRUE(snap->nodes.empty()) << "the batch's other mutations must not be applied";
  EXPECT_EQ(snap->kv[0]->value, "a");
  // With the right expectation it goes through.
  b->mutations[1] = KvPut{e, 1};
  ASSERT_TRUE(commitSync(*store, b).ok());
  EXPECT_EQ(store->load()->kv[0]->value, "b");
}

TYPED_TEST(StoreContractTest, ChangesSinceReplaysToTheCurrentState) {
  auto store = this->factory_.make();
  BatchMaker bm;
  ASSERT_TRUE(commitSync(*store, bm.make(reg(node("n1"), service("web", "w1")))).ok());
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"a", "1", 0, std::nullopt})).ok());
  auto at2 = store->load();
  ASSERT_TRUE(at2.ok());
  ASSERT_TRUE(commitSync(*store, bm.make(reg(node("n2"), service("db", "d1"),
                                             {check("c", CheckStatus::kPassing, "d1")})))
                  .ok());
  ASSERT_TRUE(commitSync(*store, bm.make(DeregisterRequest{"n1", "", ""})).ok());
  ASSERT_TRUE(commitSync(*store, bm.make(KvDeleteRequest{"a", false, std::nullopt})).ok());
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"a", "2", 0, std::nullopt})).ok());
  ASSERT_TRUE(
      commitSync(*store, bm.make(CheckUpdateRequest{"n2", "c", CheckStatus::kCritical, ""})).ok());

  auto cs = store->changesSince(2);
  ASSERT_TRUE(cs.ok()) << cs.error().message();
  EXPECT_EQ(cs->from_revision, 2u);
  EXPECT_EQ(cs->revision, 7u);
  Model m = Model::of(*at2);
  for (const auto& mu : cs->mutations)
    m.apply(mu);
  EXPECT_EQ(m.objects, Model::of(*store->load()).objects);
  EXPECT_EQ(m.objects.at("kv/a"), "2");
  EXPECT_EQ(m.objects.at("chk/n2/c"), "critical");
  EXPECT_EQ(m.objects.count("node/n1"), 0u);

  auto none = store->changesSince(7);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->mutations.empty());
  auto future = store->changesSince(99);
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.error().code(), ErrorCode::kInvalidArgument);
}

TYPED_TEST(StoreContractTest, WatchDeliversBacklogThenLiveCommits) {
  auto store = this->factory_.make();
  BatchMaker bm;
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"a", "1", 0, std::nullopt})).ok());
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"b", "1", 0, std::nullopt})).ok());
  std::mutex mu;
  std::vector<std::pair<uint64_t, size_t>> got; // (revision, mutations)
  auto w = store->watch(1, [&](const ChangeSet& cs) {
    std::lock_guard<std::mutex> l(mu);
    got.emplace_back(cs.revision, cs.mutations.size());
  });
  ASSERT_TRUE(w.ok()) << w.error().message();
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"c", "1", 0, std::nullopt})).ok());
  {
    std::lock_guard<std::mutex> l(mu);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0], std::make_pair(uint64_t{2}, size_t{1})); // backlog: b
    EXPECT_EQ(got[1], std::make_pair(uint64_t{3}, size_t{1})); // live: c
  }
  w->reset();
  ASSERT_TRUE(commitSync(*store, bm.make(KvPutRequest{"d", "1", 0, std::nullopt})).ok());
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(got.size(), 2u) << "no delivery after the watch is destroyed";
}

// --- SQLite ----------------------------------------------------------------------------------

TEST(SqliteStoreTest, ReopenedStoreHasEverything) {
  TempDir dir;
  const std::string path = dir.file("r.db");
  BatchMaker bm;
  {
    auto store = SqliteStore::open({path});
    ASSERT_TRUE(store.ok()) << store.error().message();
    for (int i = 0; i < 50; ++i)
      ASSERT_TRUE(commitSync(**store, bm.make(reg(node("n" + std::to_string(i)),
                                                  service("web", "w" + std::to_string(i)))))
                      .ok());
    ASSERT_TRUE(commitSync(**store, bm.make(DeregisterRequest{"n7", "", ""})).ok());
    ASSERT_TRUE(commitSync(**store, bm.make(KvPutRequest{"cfg", "on", 3, std::nullopt})).ok());
  }
  auto store = SqliteStore::open({path});
  ASSERT_TRUE(store.ok()) << store.error().message();
  EXPECT_EQ((*store)->revision(), 52u);
  auto snap = (*store)->load();
  ASSERT_TRUE(snap.ok());
  Catalog c;
  ASSERT_TRUE(c.restore(*snap).ok());
  EXPECT_EQ(c.counts().nodes, 49u);
  EXPECT_EQ(c.counts().services, 49u);
  EXPECT_FALSE(c.node("n7"));
  EXPECT_EQ(c.kvGet("cfg").value->flags, 3u);
  EXPECT_EQ(c.index(), 52u);
  // And it keeps going from there.
  BatchMaker more;
  ASSERT_TRUE(more.catalog.restore(*snap).ok());
  ASSERT_TRUE(commitSync(**store, more.make(reg(node("late")))).ok());
  EXPECT_EQ((*store)->revision(), 53u);
}

TEST(SqliteStoreTest, GroupCommitAcknowledgesEveryCallerAfterOneTransaction) {
  TempDir dir;
  auto opened = SqliteStore::open({dir.file("g.db")});
  ASSERT_TRUE(opened.ok());
  SqliteStore& store = **opened;
  BatchMaker bm;
  ASSERT_TRUE(commitSync(store, bm.make(KvPutRequest{"seed", "1", 0, std::nullopt})).ok());

  // Hold the committer thread inside a watch backlog delivery, queue 200 commits behind it,
  // then release it: they are all queued together and must share one transaction.
  std::promise<void> entered, release;
  auto release_fut = release.get_future().share();
  std::unique_ptr<StoreWatch> watch;
  // Here, not in the holder thread: the callback runs again (on the committer thread, for the
  // 200 writes) after that thread ended.
  std::atomic<bool> first{true};
  std::thread holder([&] {
    auto w = store.watch(0, [&, release_fut](const ChangeSet&) {
      if (!first.exchange(false))
        return;
      entered.set_value();
      release_fut.wait();
    });
    ASSERT_TRUE(w.ok());
    watch = std::move(*w);
  });
  entered.get_future().wait();
  const uint64_t tx_before = store.stats().transactions;
  constexpr int kWrites = 200;
  std::atomic<int> acked{0};
  std::atomic<int> failed{0};
  for (int i = 0; i < kWrites; ++i)
    store.commit(bm.make(KvPutRequest{"k" + std::to_string(i), "v", 0, std::nullopt}),
                 [&](Status st) { (st.ok() ? acked : failed).fetch_add(1); });
  EXPECT_EQ(acked.load(), 0) << "nothing is acknowledged before it is durable";
  release.set_value();
  holder.join();
  store.flush();
  EXPECT_EQ(acked.load(), kWrites);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(store.stats().transactions - tx_before, 1u) << "one transaction, one fsync";
  EXPECT_EQ(store.revision(), static_cast<uint64_t>(kWrites + 1));
  EXPECT_EQ(store.load()->kv.size(), static_cast<size_t>(kWrites + 1));
}

TEST(SqliteStoreTest, GroupCommitRespectsTheMutationBudget) {
  TempDir dir;
  SqliteStoreSettings s{dir.file("b.db")};
  s.max_group_mutations = 10;
  auto opened = SqliteStore::open(s);
  ASSERT_TRUE(opened.ok());
  SqliteStore& store = **opened;
  BatchMaker bm;
  std::promise<void> entered, release;
  auto release_fut = release.get_future().share();
  ASSERT_TRUE(commitSync(store, bm.make(KvPutRequest{"seed", "1", 0, std::nullopt})).ok());
  std::unique_ptr<StoreWatch> watch;
  std::thread holder([&] {
    bool first = true;
    auto w = store.watch(0, [&, release_fut](const ChangeSet&) {
      if (std::exchange(first, false)) {
        entered.set_value();
        release_fut.wait();
      }
    });
    watch = std::move(w).value();
  });
  entered.get_future().wait();
  const uint64_t tx_before = store.stats().transactions;
  for (int i = 0; i < 40; ++i)
    store.commit(bm.make(KvPutRequest{"k" + std::to_string(i), "v", 0, std::nullopt}),
                 [](Status st) { EXPECT_TRUE(st.ok()); });
  release.set_value();
  holder.join();
  store.flush();
  EXPECT_EQ(store.stats().transactions - tx_before, 4u) << "40 one-mutation batches, 10 a group";
}

TEST(SqliteStoreTest, GarbageFileIsAClearError) {
  TempDir dir;
  const std::string path = dir.file("junk.db");
  std::ofstream(path) << std::string(8192, 'x');
  auto store = SqliteStore::open({path});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.error().message(), HasSubstr(path));
  EXPECT_THAT(store.error().message(), HasSubstr("not a database"));
}

TEST(SqliteStoreTest, ForeignDatabaseIsRefused) {
  TempDir dir;
  const std::string path = dir.file("other.db");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE users(name TEXT)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::open({path});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.error().message(), HasSubstr("not a Trellis registry database"));
}

TEST(SqliteStoreTest, NewerSchemaVersionIsRefused) {
  TempDir dir;
  const std::string path = dir.file("new.db");
  ASSERT_TRUE(SqliteStore::open({path}).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 7 WHERE key = 'schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::open({path});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.error().message(),
              HasSubstr("schema version 7 is newer than this binary supports (1)"));
}

TEST(SqliteStoreTest, UndecodableRowIsAClearErrorAtLoad) {
  TempDir dir;
  const std::string path = dir.file("row.db");
  {
    auto store = SqliteStore::open({path});
    ASSERT_TRUE(store.ok());
    BatchMaker bm;
    ASSERT_TRUE(commitSync(**store, bm.make(reg(node("n1"), service("web", "w1")))).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "UPDATE services SET body = '{\"Node\": 5'", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::open({path});
  ASSERT_TRUE(store.ok());
  auto snap = (*store)->load();
  ASSERT_FALSE(snap.ok());
  EXPECT_THAT(snap.error().message(), HasSubstr("services row \"n1/w1\": not valid JSON"));
}

TEST(SqliteStoreTest, DamagedPagesAreAClearError) {
  TempDir dir;
  const std::string path = dir.file("damaged.db");
  {
    auto store = SqliteStore::open({path});
    ASSERT_TRUE(store.ok());
    BatchMaker bm;
    for (int i = 0; i < 300; ++i)
      ASSERT_TRUE(commitSync(**store, bm.make(KvPutRequest{"key/" + std::to_string(i),
                                                           std::string(200, 'v'), 0, std::nullopt}))
                      .ok());
  } // closing checkpoints the WAL into the main file
  const auto size = fs::file_size(path);
  ASSERT_GT(size, 3 * 4096u);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * 4096);
    std::string junk(size - 2 * 4096, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto store = SqliteStore::open({path});
  Status st = okStatus();
  if (!store.ok()) {
    st = store.error();
  } else if (auto snap = (*store)->load(); !snap.ok()) {
    st = snap.error();
  }
  ASSERT_FALSE(st.ok()) << "a damaged database must be refused";
  EXPECT_THAT(st.error().message(), HasSubstr(path));
}

TEST(SqliteStoreTest, SecondOpenOfTheSameFileIsRefused) {
  TempDir dir;
  const std::string path = dir.file("locked.db");
  auto first = SqliteStore::open({path});
  ASSERT_TRUE(first.ok());
  auto second = SqliteStore::open({path});
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.error().message(), HasSubstr("locked"));
}

TEST(SqliteStoreTest, UnwritableLocationIsAClearError) {
  auto store = SqliteStore::open({"/nonexistent-dir/trellis/registry.db"});
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.error().message(), HasSubstr("/nonexistent-dir/trellis/registry.db"));
}

TEST(SqliteStoreTest, CompactedHistoryIsReportedNotGuessed) {
  TempDir dir;
  SqliteStoreSettings s{dir.file("c.db")};
  s.tombstone_retention = 10;
  auto opened = SqliteStore::open(s);
  ASSERT_TRUE(opened.ok());
  BatchMaker bm;
  // History is pruned once it spans twice the retention.
  for (int i = 0; i < 40; ++i) {
    const std::string key = "k" + std::to_string(i % 3);
    if (i % 2 == 0)
      ASSERT_TRUE(commitSync(**opened, bm.make(KvPutRequest{key, "v", 0, std::nullopt})).ok());
    else
      ASSERT_TRUE(commitSync(**opened, bm.make(KvDeleteRequest{key, false, std::nullopt})).ok());
  }
  auto old = (*opened)->changesSince(5);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(old.error().message(), HasSubstr("compacted"));
  auto recent = (*opened)->changesSince(35);
  ASSERT_TRUE(recent.ok()) << recent.error().message();
}

// The durability promise, tested the hard way: a child process commits and reports every
// acknowledged revision through a pipe, then is killed with SIGKILL mid-stream. Every
// acknowledged write must be in the database when it is reopened.
TEST(SqliteStoreTest, KilledProcessLosesNoAcknowledgedWrite) {
  TempDir dir;
  const std::string path = dir.file("kill.db");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto store = SqliteStore::open({path});
    if (!store.ok())
      _exit(3);
    BatchMaker bm;
    for (uint64_t round = 0;; ++round) {
      // Eight writes in flight at a time, so group commit is part of what is tested.
      std::vector<std::promise<void>> acks(8);
      for (auto& ack : acks) {
        auto b = bm.make(
            KvPutRequest{"k" + std::to_string(bm.catalog.index() + 1), "v", 0, std::nullopt});
        const uint64_t rev = b->revision;
        (*store)->commit(b, [&ack, rev, fd = fds[1]](Status st) {
          if (st.ok()) {
            ssize_t n = write(fd, &rev, sizeof rev);
            (void)n;
          }
          ack.set_value();
        });
      }
      for (auto& ack : acks)
        ack.get_future().wait();
    }
  }
  close(fds[1]);
  std::set<uint64_t> acked;
  uint64_t rev = 0;
  while (acked.size() < 400 && read(fds[0], &rev, sizeof rev) == sizeof rev)
    acked.insert(rev);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  // Acknowledgements written before the kill count too.
  while (read(fds[0], &rev, sizeof rev) == sizeof rev)
    acked.insert(rev);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child should have been killed, status " << status;
  ASSERT_GE(acked.size(), 400u);

  auto store = SqliteStore::open({path});
  ASSERT_TRUE(store.ok()) << store.error().message();
  auto snap = (*store)->load();
  ASSERT_TRUE(snap.ok()) << snap.error().message();
  Catalog c;
  ASSERT_TRUE(c.restore(*snap).ok());
  EXPECT_GE(c.index(), *acked.rbegin());
  size_t missing = 0;
  for (uint64_t r : acked)
    if (!c.kvGet("k" + std::to_string(r)).value)
      ++missing;
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged writes";
}

} // namespace
} // namespace trellis::registry
