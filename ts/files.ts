/**
 * `sandbox.files` and `container.files`: one files API over every backend, implemented once in the Rust core.
 *
 * Paths are absolute and normalised lexically before anything reaches the sandbox, as `path.posix.resolve`
 * does: `.` and empty segments are dropped, `..` removes the segment before it (above `/` it stays at `/`), so
 * `/a/link/../b` is `/a/b` whatever `/a/link` is. No path ever goes through a shell: metadata comes from
 * argv-only runs of `stat`, `find`, `readlink`, `mkdir`, `rm`, `mv` (busybox or GNU), contents move through the
 * backend's archive routes. Names with spaces, newlines, unicode or a leading `-` work as any other. On the v1
 * backend `stat`, `exists`, `mkdir`, `remove`, `rename` and `write` use the sandbox endpoint's own file operations
 * (no process; see the README for what differs).
 */
import native = require('../native/index.cjs')
import { call, type CallOptions } from './call'
import * as check from './check'
import { INTERNAL, bind, internalOnly } from './internal'

/** One directory entry or `stat` result. */
export interface FileEntry {
  /** The last path segment (`/` for the root). */
  name: string
  /** The normalised absolute path. */
  path: string
  /** What it is (`other`: a device, FIFO or socket). */
  type: 'file' | 'directory' | 'symlink' | 'other'
  /** Size in bytes (a symbolic link: the length of its target). */
  size: number
  /**
   * Permission bits (`mode & 0o7777`; `& 0o777` where a v1 sandbox cannot run `stat`: the v1 contract has no
   * setuid/setgid/sticky bit).
   */
  mode: number
  /**
   * Last modification, milliseconds since the epoch (whole seconds: what `stat` reports). `NaN` where the backend
   * does not say: a v1 sandbox that cannot run `stat` (the v1 contract has no modification time).
   */
  mtimeMs: number
  /** Where a symbolic link points, as stored in the link (only for `type: 'symlink'`). */
  linkTarget?: string
}

/** What {@link Files.uploadDir} / {@link Files.downloadDir} moved. */
export interface DirTransfer {
  /** Entries written (files, directories, links). */
  entries: number
  /** Bytes of file contents. */
  bytes: number
}

/** Options for {@link Files.mkdir}. */
export interface MkdirOptions extends CallOptions {
  /** Make missing parents; an existing directory is fine (as `mkdir -p`). */
  recursive?: boolean
}

/** Options for {@link Files.remove}. */
export interface RemoveFileOptions extends CallOptions {
  /** Remove a directory and everything in it (without it a directory is `ERR_NOT_A_FILE`). */
  recursive?: boolean
  /** A missing path is success instead of `ERR_PATH_NOT_FOUND`. */
  force?: boolean
}

/** Options for {@link Files.rename}. */
export interface RenameOptions extends CallOptions {
  /** Replace a file or link at the destination (a directory there is still `ERR_PATH_EXISTS`). */
  overwrite?: boolean
}

/** Options for {@link Files.write}. */
export interface FilesWriteOptions extends CallOptions {
  /** Permission bits of the file (default `0o644`). One file only: in a many-file write each file has its own. */
  mode?: number
  /** Make missing parent directories (mode 0755); without it a missing one is `ERR_PATH_NOT_FOUND`. */
  parents?: boolean
}

/** One file of a many-file {@link Files.write}. */
export interface FileToWrite {
  path: string
  data: string | Uint8Array
  /** Permission bits (default `0o644`). */
  mode?: number
}

/** Options for {@link Files.read}. */
export interface FilesReadOptions extends CallOptions {
  /** `'utf8'`: resolve with a string (invalid sequences become U+FFFD); default a Buffer. */
  encoding?: 'utf8' | 'utf-8'
}

const MKDIR: check.Shape = { ...check.CALL, recursive: 'boolean' }
const REMOVE: check.Shape = { ...check.CALL, recursive: 'boolean', force: 'boolean' }
const RENAME: check.Shape = { ...check.CALL, overwrite: 'boolean' }
const WRITE: check.Shape = { ...check.CALL, mode: 'number', parents: 'boolean' }
const READ: check.Shape = { ...check.CALL, encoding: 'string' }
const FILE: check.Shape = { path: 'string', data: 'data', mode: 'number' }

/**
 * Files in one sandbox or container: `sandbox.files`, `container.files`. Errors: a missing path is
 * `ERR_PATH_NOT_FOUND`, a directory where a file is expected `ERR_NOT_A_FILE`, a file where a directory is
 * expected `ERR_NOT_A_DIRECTORY`, an existing path `ERR_PATH_EXISTS` (each with `path`); a relative path or one
 * with NUL is `ERR_INVALID_ARGUMENT`. Every method takes `{ signal, timeoutMs }` (default deadline 60 s).
 */
export class Files {
  readonly #inner: native.Files

  private constructor(token: symbol, inner: native.Files) {
    internalOnly(token, new.target.name)
    this.#inner = bind(this, inner)
  }

  /** @internal */
  static wrap(inner: native.Files): Files {
    return new Files(INTERNAL, inner)
  }

  /**
   * The entries of directory `dir` (a link to a directory is followed), sorted by name; each entry describes a
   * link as a link (with `linkTarget`). Not a directory: `ERR_NOT_A_DIRECTORY`.
   */
  list(dir: string, options?: CallOptions): Promise<FileEntry[]> {
    return call(options?.signal, async () => {
      check.arg('dir', dir, 'string')
      check.opts('options', options, check.CALL)
      return (await this.#inner.list(dir, options)) as FileEntry[]
    })
  }

  /** What is at `path`, following a final symbolic link (as `fs.stat`; a dangling link is `ERR_PATH_NOT_FOUND`). */
  stat(path: string, options?: CallOptions): Promise<FileEntry> {
    return call(options?.signal, async () => {
      check.arg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return (await this.#inner.stat(path, true, options)) as FileEntry
    })
  }

  /** What is at `path`, a final symbolic link itself (as `fs.lstat`), with its `linkTarget`. */
  lstat(path: string, options?: CallOptions): Promise<FileEntry> {
    return call(options?.signal, async () => {
      check.arg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return (await this.#inner.stat(path, false, options)) as FileEntry
    })
  }

  /** Whether something is at `path`, links followed (a dangling link, or a file as a parent: `false`). */
  exists(path: string, options?: CallOptions): Promise<boolean> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.exists(path, options)
    })
  }

  /**
   * Make a directory. Without `recursive` an existing path is `ERR_PATH_EXISTS` and a missing parent
   * `ERR_PATH_NOT_FOUND`; with it parents are made and an existing directory is fine.
   */
  mkdir(path: string, options?: MkdirOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.opts('options', options, MKDIR)
      return this.#inner.mkdir(path, options)
    })
  }

  /** Remove a file or link (never what a link points to), or with `recursive` a directory tree. `/` is refused. */
  remove(path: string, options?: RemoveFileOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('path', path, 'string')
      check.opts('options', options, REMOVE)
      return this.#inner.remove(path, options)
    })
  }

  /**
   * Rename `from` to `to`. Something at `to` is `ERR_PATH_EXISTS` unless `overwrite` and it is not a directory;
   * a missing `from` or a missing parent of `to` is `ERR_PATH_NOT_FOUND`.
   */
  rename(from: string, to: string, options?: RenameOptions): Promise<void> {
    return call(options?.signal, () => {
      check.arg('from', from, 'string')
      check.arg('to', to, 'string')
      check.opts('options', options, RENAME)
      return this.#inner.rename(from, to, options)
    })
  }

  /**
   * Write one file, or many in one archive (`write([{ path, data, mode }, …], { parents })`). A file replaces
   * what is at its path (a symbolic link is replaced, not written through); a directory there is
   * `ERR_NOT_A_FILE`. With `parents` missing directories are made; without, a missing one is
   * `ERR_PATH_NOT_FOUND` naming it.
   */
  write(path: string, data: string | Uint8Array, options?: FilesWriteOptions): Promise<void>
  write(files: FileToWrite[], options?: Omit<FilesWriteOptions, 'mode'>): Promise<void>
  write(
    pathOrFiles: string | FileToWrite[],
    dataOrOptions?: string | Uint8Array | FilesWriteOptions,
    options?: FilesWriteOptions,
  ): Promise<void> {
    if (Array.isArray(pathOrFiles)) {
      const opts = dataOrOptions as FilesWriteOptions | undefined
      return call(opts?.signal, () => {
        pathOrFiles.forEach((f, i) => check.opts(`files[${i}]`, f, FILE, ['path', 'data']))
        check.opts('options', opts, WRITE)
        return this.#inner.writeMany(pathOrFiles, opts)
      })
    }
    return call(options?.signal, () => {
      check.arg('path', pathOrFiles, 'string')
      check.arg('data', dataOrOptions, 'data')
      check.opts('options', options, WRITE)
      return this.#inner.write(pathOrFiles, dataOrOptions as string | Uint8Array, options)
    })
  }

  /**
   * The bytes of a regular file, links followed; with `{ encoding: 'utf8' }` a string. Given an array of paths,
   * the files' contents in the same order (a path given twice comes twice), in one request on the v1 backend
   * (its multipart download); the first path that cannot be read rejects the call with its error
   * (`ERR_PATH_NOT_FOUND`, `ERR_NOT_A_FILE`, naming the path).
   */
  read(path: string, options: FilesReadOptions & { encoding: 'utf8' | 'utf-8' }): Promise<string>
  read(path: string, options?: FilesReadOptions): Promise<Buffer>
  read(paths: string[], options: FilesReadOptions & { encoding: 'utf8' | 'utf-8' }): Promise<string[]>
  read(paths: string[], options?: FilesReadOptions): Promise<Buffer[]>
  read(path: string | string[], options?: FilesReadOptions): Promise<Buffer | string | Array<Buffer | string>> {
    return call<Buffer | string | Array<Buffer | string>>(options?.signal, () => {
      if (Array.isArray(path)) {
        path.forEach((p, i) => check.arg(`paths[${i}]`, p, 'string'))
        check.opts('options', options, READ)
        return this.#inner.readMany(path, options)
      }
      check.arg('path', path, 'string')
      check.opts('options', options, READ)
      return this.#inner.read(path, options)
    })
  }

  /**
   * Copy the tree under host directory `hostDir` into sandbox directory `dir` (made if missing), streamed: packed
   * on the host as the sandbox's `tar -x` reads it (default deadline 10 min). Links are copied as links; one that
   * leads outside `hostDir` (an absolute target, or `..` above it) is `ERR_PATH_ESCAPES`, found before anything is
   * sent. Devices and FIFOs are skipped.
   */
  uploadDir(hostDir: string, dir: string, options?: CallOptions): Promise<DirTransfer> {
    return call(options?.signal, () => {
      check.arg('hostDir', hostDir, 'string')
      check.arg('dir', dir, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.uploadDir(hostDir, dir, options)
    })
  }

  /**
   * Copy the tree under sandbox directory `dir` into host directory `hostDir` (made if missing), streamed: the
   * sandbox's `tar -c` is unpacked as it arrives (default deadline 10 min). A link in the tree that leads outside
   * `dir` is `ERR_PATH_ESCAPES` and stops the copy (entries before it stay). Devices and FIFOs are skipped.
   */
  downloadDir(dir: string, hostDir: string, options?: CallOptions): Promise<DirTransfer> {
    return call(options?.signal, () => {
      check.arg('dir', dir, 'string')
      check.arg('hostDir', hostDir, 'string')
      check.opts('options', options, check.CALL)
      return this.#inner.downloadDir(dir, hostDir, options)
    })
  }
}
