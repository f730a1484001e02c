#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

namespace trellis {

// A vector whose elements sit in fixed-size chunks that copies share. Copying costs one
// reference per chunk instead of a copy of every element, and set() copies only the chunk it
// changes (when another vector still shares it): a configuration of a hundred shared clusters
// that changes one of them copies one chunk, and never touches the others' reference counts.
//
// Not thread-safe for writing; a vector that other threads read (through copies) is only ever
// read. A chunk is written in place only while this vector is its sole owner, which no other
// thread can change: only holders of a reference can take another.
template <typename T> class ChunkedVector {
public:
  static constexpr size_t kChunk = 16;

  class const_iterator {
  public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;
    const_iterator() = default;
    const_iterator(const ChunkedVector* v, size_t i) : v_(v), i_(i) {}
    const T& operator*() const { return (*v_)[i_]; }
    const T* operator->() const { return &(*v_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) { return const_iterator(v_, i_++); }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }

  private:
    const ChunkedVector* v_ = nullptr;
    size_t i_ = 0;
  };

  ChunkedVector() = default;
  ChunkedVector(std::initializer_list<T> items) {
    for (const T& t : items)
      push_back(t);
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const T& operator[](size_t i) const { return chunks_[i / kChunk]->items[i % kChunk]; }
  const T& back() const { return (*this)[size_ - 1]; }
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size_); }

  void reserve(size_t n) { chunks_.reserve((n + kChunk - 1) / kChunk); }
  void clear() {
    chunks_.clear();
    size_ = 0;
  }
  void push_back(T item) {
    if (size_ % kChunk == 0)
      chunks_.push_back(std::make_shared<Chunk>());
    else
      own(chunks_.back());
    chunks_.back()->items[size_ % kChunk] = std::move(item);
    size_++;
  }
  void set(size_t i, T item) {
    auto& c = chunks_[i / kChunk];
    own(c);
    c->items[i % kChunk] = std::move(item);
  }

  // Whether elements [k * kChunk, (k + 1) * kChunk) of both are the very same chunk (so
  // equal, without looking at them).
  size_t chunkCount() const { return chunks_.size(); }
  bool sharesChunk(const ChunkedVector& o, size_t k) const {
    return k < chunks_.size() && k < o.chunks_.size() && chunks_[k] == o.chunks_[k];
  }

  std::vector<T> toVector() const { return std::vector<T>(begin(), end()); }

private:
  struct Chunk {
    std::array<T, kChunk> items{};
  };
  static void own(std::shared_ptr<Chunk>& c) {
    if (c.use_count() > 1)
      c = std::make_shared<Chunk>(*c);
  }

  std::vector<std::shared_ptr<Chunk>> chunks_;
  size_t size_ = 0;
};

} // namespace trellis
