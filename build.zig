//! Builds the C engine (csrc/) as the shared library `qwen3_inference`.
//!
//!   zig build                 native library -> zig-out/lib/
//!   zig build cross           the five release targets -> zig-out/lib/<os>-<arch>/
//!   zig build test            builds and runs every csrc/tests/test_*.c
//!   zig build tests-install   builds them into zig-out/tests/ (for running under qemu)
//!   zig build example         the C example csrc/examples/generate.c -> zig-out/bin/
//!
//! Sources are discovered, not listed: every csrc/src/*.c is compiled. Files whose name
//! ends in an ISA suffix only build for that architecture (`_avx2`, `_avx512`, `_amx` on x86_64;
//! `_neon`, `_sve` on aarch64); their SIMD code uses per-function target attributes, so
//! the rest of the library stays at the baseline CPU and the kernel tier is chosen at
//! run time.
const std = @import("std");

const Release = struct { dir: []const u8, query: std.Target.Query };

/// The shipped targets. Linux pins glibc 2.17 so the library loads on old distributions.
const releases = [_]Release{
    .{ .dir = "linux-x86_64", .query = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .gnu, .glibc_version = .{ .major = 2, .minor = 17, .patch = 0 } } },
    .{ .dir = "linux-aarch64", .query = .{ .cpu_arch = .aarch64, .os_tag = .linux, .abi = .gnu, .glibc_version = .{ .major = 2, .minor = 17, .patch = 0 } } },
    .{ .dir = "macos-x86_64", .query = .{ .cpu_arch = .x86_64, .os_tag = .macos } },
    .{ .dir = "macos-aarch64", .query = .{ .cpu_arch = .aarch64, .os_tag = .macos } },
    .{ .dir = "windows-x86_64", .query = .{ .cpu_arch = .x86_64, .os_tag = .windows, .abi = .gnu } },
};

const c_flags = [_][]const u8{
    "-std=c11",
    "-Wall",
    "-Wextra",
    // Bit-identical results across kernel tiers and against the TypeScript engine need
    // every a*b+c rounded twice, as written: never let the compiler fuse it.
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fvisibility=hidden",
    "-D_GNU_SOURCE",
};

pub fn build(b: *std.Build) !void {
    // Baseline CPU by default: the library must run on any x86_64/aarch64 and pick its
    // kernels at run time, so the host's features must not leak into the generic code.
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_model = .baseline } });
    // ReleaseFast unless asked otherwise: an inference engine built in Debug is 20x slower,
    // and tests should run the code users run. `-Doptimize=Debug` for debugging.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default ReleaseFast)") orelse .ReleaseFast;

    const sources = try listCFiles(b, "csrc/src");
    headers_hash = try hashHeaders(b);

    const lib = addEngine(b, target, optimize, .dynamic, sources, false);
    b.installArtifact(lib);

    const cross = b.step("cross", "Build the shared library for every release target");
    for (releases) |release| {
        const t = b.resolveTargetQuery(release.query);
        // Release libraries ship without debug symbols: the published package stays small.
        const l = addEngine(b, t, .ReleaseFast, .dynamic, sources, true);
        const install = b.addInstallArtifact(l, .{
            .dest_dir = .{ .override = .{ .custom = b.fmt("lib/{s}", .{release.dir}) } },
            .implib_dir = .disabled,
            .pdb_dir = .disabled,
        });
        cross.dependOn(&install.step);
    }

    // C tests link the engine statically so they can reach internal functions.
    const test_step = b.step("test", "Build and run the C tests");
    // Cross-built tests (e.g. -Dtarget=aarch64-linux-musl) cannot run here; this step only
    // installs them into zig-out/tests/ so tools/test_aarch64.ts can run them under qemu.
    const tests_install = b.step("tests-install", "Build the C tests into zig-out/tests/ without running them");
    const test_only = b.option([]const u8, "test-filter", "Only run csrc/tests/test_<NAME>.c");
    const static = addEngine(b, target, optimize, .static, sources, false);
    const tests = try listCFiles(b, "csrc/tests");
    for (tests) |file| {
        if (!std.mem.startsWith(u8, file, "test_")) continue;
        const name = file[0 .. file.len - 2];
        if (test_only) |only| if (!std.mem.eql(u8, name[5..], only)) continue;
        const exe = b.addExecutable(.{
            .name = name,
            .root_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true }),
        });
        exe.root_module.addCSourceFile(.{ .file = b.path(b.fmt("csrc/tests/{s}", .{file})), .flags = &c_flags });
        exe.root_module.addIncludePath(b.path("csrc/include"));
        exe.root_module.addCMacro("QWEN3_HEADERS_HASH", headers_hash);
        exe.root_module.addIncludePath(b.path("csrc/src"));
        exe.root_module.addIncludePath(b.path("csrc/tests"));
        exe.linkLibrary(static);
        const run = b.addRunArtifact(exe);
        run.setCwd(b.path("."));
        run.has_side_effects = true;
        test_step.dependOn(&run.step);
        const install_test = b.addInstallArtifact(exe, .{ .dest_dir = .{ .override = .{ .custom = "tests" } } });
        tests_install.dependOn(&install_test.step);
    }

    // csrc/tests/bench_<name>.c are measuring tools (bench_matvec: kernel GB/s; bench_bandwidth:
    // the machine's read bandwidth, used by bench/compare.ts). `zig build bench-tools` installs
    // them as zig-out/bin/bench-<name>; `zig build test` builds them so they keep compiling,
    // but never runs them (timings are not tests).
    const bench_tools = b.step("bench-tools", "Build the C measuring tools into zig-out/bin/");
    for (tests) |file| {
        if (!std.mem.startsWith(u8, file, "bench_")) continue;
        const stem = file[6 .. file.len - 2];
        const bench = b.addExecutable(.{
            .name = b.fmt("bench-{s}", .{stem}),
            .root_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true }),
        });
        bench.root_module.addCSourceFile(.{ .file = b.path(b.fmt("csrc/tests/{s}", .{file})), .flags = &c_flags });
        bench.root_module.addIncludePath(b.path("csrc/include"));
        bench.root_module.addCMacro("QWEN3_HEADERS_HASH", headers_hash);
        bench.root_module.addIncludePath(b.path("csrc/src"));
        bench.linkLibrary(static);
        const install_bench = b.addInstallArtifact(bench, .{});
        bench_tools.dependOn(&install_bench.step);
        b.step(b.fmt("bench-{s}", .{stem}), b.fmt("Build zig-out/bin/bench-{s}", .{stem})).dependOn(&install_bench.step);
        test_step.dependOn(&bench.step);
    }

    // csrc/examples/generate.c uses only the public header and the shared library, the way a
    // C caller would; `zig build example` installs it as zig-out/bin/qwen3-generate, and
    // `zig build test` builds it so it keeps compiling.
    const example = b.addExecutable(.{
        .name = "qwen3-generate",
        .root_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true }),
    });
    example.root_module.addCSourceFile(.{ .file = b.path("csrc/examples/generate.c"), .flags = &c_flags });
    example.root_module.addIncludePath(b.path("csrc/include"));
    example.root_module.addCMacro("QWEN3_HEADERS_HASH", headers_hash);
    example.linkLibrary(lib);
    const install_example = b.addInstallArtifact(example, .{});
    b.step("example", "Build the C example into zig-out/bin/qwen3-generate").dependOn(&install_example.step);
    test_step.dependOn(&example.step);
}

fn addEngine(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.OptimizeMode,
    linkage: std.builtin.LinkMode,
    sources: []const []const u8,
    strip: bool,
) *std.Build.Step.Compile {
    const lib = b.addLibrary(.{
        .name = "qwen3_inference",
        .linkage = linkage,
        .root_module = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true, .strip = strip }),
    });
    const arch = target.result.cpu.arch;
    var files = std.ArrayList([]const u8).init(b.allocator);
    for (sources) |file| {
        const x86_only = hasAny(file, &.{ "_avx2.c", "_avx512.c", "_amx.c" });
        const arm_only = hasAny(file, &.{ "_neon.c", "_sve.c" });
        if (x86_only and arch != .x86_64) continue;
        if (arm_only and arch != .aarch64) continue;
        files.append(b.fmt("csrc/src/{s}", .{file})) catch @panic("OOM");
    }
    lib.root_module.addCSourceFiles(.{ .files = files.items, .flags = &c_flags });
    lib.root_module.addIncludePath(b.path("csrc/include"));
    lib.root_module.addIncludePath(b.path("csrc/src"));
    lib.root_module.addCMacro("QWEN3_BUILDING_LIBRARY", "1");
    lib.root_module.addCMacro("QWEN3_HEADERS_HASH", headers_hash);
    if (target.result.os.tag == .windows) lib.root_module.linkSystemLibrary("kernel32", .{});
    // dladdr/dlopen (platform.c's qwen3_library_pin) are in libdl before glibc 2.34
    if (target.result.os.tag == .linux and target.result.abi.isGnu()) lib.root_module.linkSystemLibrary("dl", .{});
    return lib;
}

/// A hash of every C header under csrc/, passed to each compilation as a macro. Zig 0.14's
/// cache took the shared library as up to date after a header changed when no .c file had:
/// an edit to csrc/src/kernels_blocks_x86.h left zig-out/lib/libqwen3_inference.so as it was
/// (`zig build --summary all`: "zig build-lib qwen3_inference ... cached"), so the Deno tests
/// and benchmarks ran the old code. Macros are part of every cache key, so now any header
/// change rebuilds everything that includes headers.
var headers_hash: []const u8 = "0";

fn hashHeaders(b: *std.Build) ![]const u8 {
    var h = std.hash.Wyhash.init(0);
    for ([_][]const u8{ "csrc/include", "csrc/src", "csrc/tests" }) |sub| {
        var dir = try b.build_root.handle.openDir(sub, .{ .iterate = true });
        defer dir.close();
        var names = std.ArrayList([]const u8).init(b.allocator);
        var it = dir.iterate();
        while (try it.next()) |entry| {
            if (entry.kind == .file and std.mem.endsWith(u8, entry.name, ".h")) try names.append(b.dupe(entry.name));
        }
        std.mem.sort([]const u8, names.items, {}, struct {
            fn lt(_: void, x: []const u8, y: []const u8) bool {
                return std.mem.lessThan(u8, x, y);
            }
        }.lt);
        for (names.items) |name| {
            const data = try dir.readFileAlloc(b.allocator, name, 1 << 24);
            h.update(sub);
            h.update(name);
            h.update(data);
        }
    }
    return b.fmt("0x{x}", .{h.final()});
}

fn hasAny(name: []const u8, suffixes: []const []const u8) bool {
    for (suffixes) |s| if (std.mem.endsWith(u8, name, s)) return true;
    return false;
}

/// The .c files of a folder, sorted so builds are reproducible.
fn listCFiles(b: *std.Build, sub: []const u8) ![]const []const u8 {
    var dir = try b.build_root.handle.openDir(sub, .{ .iterate = true });
    defer dir.close();
    var list = std.ArrayList([]const u8).init(b.allocator);
    var it = dir.iterate();
    while (try it.next()) |entry| {
        if (entry.kind == .file and std.mem.endsWith(u8, entry.name, ".c"))
            try list.append(b.dupe(entry.name));
    }
    std.mem.sort([]const u8, list.items, {}, struct {
        fn lt(_: void, x: []const u8, y: []const u8) bool {
            return std.mem.lessThan(u8, x, y);
        }
    }.lt);
    return list.items;
}
