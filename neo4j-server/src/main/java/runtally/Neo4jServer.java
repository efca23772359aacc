/*
 * Neo4jServer: Neo4j 5 Community in one JVM, for runtally's tests (started by scripts/db).
 *
 * It starts the embedded DBMS with its Bolt connector on 127.0.0.1 (the embedded DBMS has no
 * HTTP server), authentication on, and sets the password of the built-in user `neo4j` to the
 * one in --password-file at every start, so that file is the only source of truth. Then it
 * writes --ready-file, stays up until SIGTERM or SIGINT, and shuts the DBMS down cleanly.
 *
 * Usage:
 *   java -cp neo4j-server-0.jar:lib/* runtally.Neo4jServer --home DIR --bolt-port N --password-file FILE
 *        [--pid-file FILE] [--ready-file FILE] [key=value ...]
 *
 * DIR holds everything: data/ (the databases), logs/ (debug.log), neo4j.conf (written here at
 * each start from the defaults below and the key=value arguments). key=value are Neo4j
 * settings by their neo4j.conf names, e.g. db.temporal.timezone=Europe/Paris; they override
 * the defaults. Neo4j refuses unknown names, so a typo fails the start instead of being ignored.
 */
package runtally;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.QueryExecutionException;
import org.neo4j.logging.log4j.Log4jLogProvider;

public final class Neo4jServer {
    private static final String USER = "neo4j";

    /** Held while starting, so a SIGTERM that comes early waits and then stops a whole DBMS. */
    private static final Object LIFECYCLE = new Object();

    private static final DateTimeFormatter STAMP =
            DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSSZ").withZone(ZoneOffset.UTC);

    private static DatabaseManagementService dbms;

    private Neo4jServer() {}

    public static void main(String[] args) throws Exception {
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("neo4j-server: " + e.getMessage());
            System.exit(2);
            return;
        }
        // Registered before the start, so a SIGTERM during it still ends in a clean shutdown.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(options), "neo4j-server-stop"));
        if (options.pidFile != null) {
            writeAtomically(options.pidFile, ProcessHandle.current().pid() + "\n");
        }
        try {
            start(options);
        } catch (Exception e) {
            log("error: cannot start Neo4j: " + e);
            e.printStackTrace(System.out);
            stop(options); // if it got as far as building the DBMS
            // halt, not exit: the shutdown hook has nothing left to do.
            Runtime.getRuntime().halt(1);
        }
        // Park the main thread; the JVM ends when a signal has run the shutdown hook.
        new CountDownLatch(1).await();
    }

    private static void start(Options options) throws IOException {
        synchronized (LIFECYCLE) {
            Map<String, String> settings = new LinkedHashMap<>();
            settings.put("server.default_listen_address", "127.0.0.1");
            settings.put("server.bolt.enabled", "true");
            settings.put("server.bolt.listen_address", "127.0.0.1:" + options.boltPort);
            // The address a routing table (Bolt ROUTE, for neo4j:// URIs) names this server by.
            settings.put("server.bolt.advertised_address", "127.0.0.1:" + options.boltPort);
            settings.put("dbms.security.auth_enabled", "true");
            // This machine may only talk to itself: no usage report to neo4j.com.
            settings.put("dbms.usage_report.enabled", "false");
            // Neo4j would otherwise size its page cache from the machine's free memory.
            settings.put("server.memory.pagecache.size", "512m");
            // By the time Bolt's worker pools stop, the databases are closed already; the
            // default 5 s wait per connector (two of them) only made every stop 10 s longer.
            settings.put("internal.server.bolt.thread_pool_shutdown_wait_time", "1s");
            settings.putAll(options.settings);

            Path home = options.home.toAbsolutePath();
            Files.createDirectories(home);
            StringBuilder conf = new StringBuilder("# Written by runtally.Neo4jServer at each start.\n");
            settings.forEach((k, v) -> conf.append(k).append('=').append(v).append('\n'));
            Path confFile = home.resolve("neo4j.conf");
            writeAtomically(confFile, conf.toString());

            String password = readPassword(options.passwordFile);
            log("starting Neo4j in " + home);
            dbms = new DatabaseManagementServiceBuilder(home)
                    .loadPropertiesFromFile(confFile)
                    .setUserLogProvider(new Log4jLogProvider(System.out))
                    .build();
            setPassword(password);
            String version = dbms.database("system")
                    .executeTransactionally(
                            "CALL dbms.components() YIELD versions RETURN versions[0] AS v",
                            Map.of(),
                            result -> String.valueOf(result.next().get("v")));
            if (options.readyFile != null) {
                writeAtomically(options.readyFile, ProcessHandle.current().pid() + "\n");
            }
            log("ready: Neo4j " + version + " Community, Bolt on " + settings.get("server.bolt.listen_address")
                    + ", user " + USER);
        }
    }

    /**
     * Gives `neo4j` our password. On a new DBMS that user exists with the password "neo4j" and
     * must change it before doing anything; the embedded API runs with full rights, so it can
     * set ours and lift that requirement. Until then a Bolt client can only change the
     * password, and ours overwrites whatever it set.
     */
    private static void setPassword(String password) {
        try {
            dbms.database("system")
                    .executeTransactionally(
                            "ALTER USER " + USER + " SET PLAINTEXT PASSWORD $password CHANGE NOT REQUIRED",
                            Map.of("password", password));
        } catch (QueryExecutionException e) {
            // Neo4j refuses to "change" a password to the one it already has: then it is set.
            if (e.getMessage() == null || !e.getMessage().contains("cannot be the same")) {
                throw e;
            }
        }
    }

    private static void stop(Options options) {
        synchronized (LIFECYCLE) {
            if (dbms == null) {
                return;
            }
            deleteQuietly(options.readyFile);
            log("stopping Neo4j");
            // Checkpoints and closes every database, so the next start needs no recovery.
            dbms.shutdown();
            dbms = null;
            deleteQuietly(options.pidFile);
            log("stopped");
        }
    }

    private static String readPassword(Path file) throws IOException {
        String password = Files.readString(file, StandardCharsets.UTF_8).strip();
        if (password.length() < 8) {
            // Neo4j's own rule (dbms.security.auth_minimum_password_length); say it up front.
            throw new IllegalArgumentException("the password in " + file + " is shorter than 8 characters");
        }
        return password;
    }

    /** Write then rename, so a reader never sees half a file. */
    private static void writeAtomically(Path file, String content) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(tmp, content, StandardCharsets.UTF_8);
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static void deleteQuietly(Path file) {
        if (file == null) {
            return;
        }
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            log("could not delete " + file + ": " + e.getMessage());
        }
    }

    private static void log(String message) {
        // Same timestamp form as Neo4j's own lines in this log.
        System.out.println(STAMP.format(Instant.now()) + " neo4j-server: " + message);
        System.out.flush();
    }

    /** The command line, checked before anything starts. */
    private static final class Options {
        Path home;
        int boltPort = -1;
        Path passwordFile;
        Path pidFile;
        Path readyFile;
        final Map<String, String> settings = new LinkedHashMap<>();

        static Options parse(String[] args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.startsWith("--")) {
                    if (i + 1 >= args.length) {
                        throw new IllegalArgumentException(a + " needs a value");
                    }
                    String v = args[++i];
                    switch (a) {
                        case "--home" -> o.home = Path.of(v);
                        case "--bolt-port" -> o.boltPort = port(v);
                        case "--password-file" -> o.passwordFile = Path.of(v);
                        case "--pid-file" -> o.pidFile = Path.of(v);
                        case "--ready-file" -> o.readyFile = Path.of(v);
                        default -> throw new IllegalArgumentException("unknown option " + a);
                    }
                } else {
                    int eq = a.indexOf('=');
                    if (eq <= 0) {
                        throw new IllegalArgumentException("expected key=value, got '" + a + "'");
                    }
                    o.settings.put(a.substring(0, eq).strip(), a.substring(eq + 1).strip());
                }
            }
            if (o.home == null || o.boltPort < 0 || o.passwordFile == null) {
                throw new IllegalArgumentException(
                        "usage: Neo4jServer --home DIR --bolt-port N --password-file FILE"
                                + " [--pid-file FILE] [--ready-file FILE] [key=value ...]");
            }
            return o;
        }

        private static int port(String v) {
            try {
                int p = Integer.parseInt(v);
                if (p >= 1 && p <= 65535) {
                    return p;
                }
            } catch (NumberFormatException e) {
                // Reported below.
            }
            throw new IllegalArgumentException("invalid port '" + v + "'");
        }
    }
}
